"""POST /v1/imports: a history file uploaded by an admin is imported by a job (202, then its status), exactly once;
keys are checked before the body, and files that cannot be imported are refused with 4xx before any job starts."""

from __future__ import annotations

import time

import pytest

from cxp.api.app import create_app
from cxp.api.guard import RequestGuard
from cxp.api.metrics import ApiMetrics
from cxp.tools.history import write_history
from tests.importer.test_import import planted_history

pytestmark = pytest.mark.integration


def _wait_done(api, location: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = api.get(location).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"the import job did not finish: {job}")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_uploaded_history_file_is_imported_once_by_a_job(db, registered, test_db_api, tmp_path, fmt) -> None:
    messages = planted_history(registered, events=1500, seed=11)
    path = tmp_path / f"h.{fmt}"
    write_history(path, fmt, messages)
    body = path.read_bytes()

    r = test_db_api.post("/v1/imports", files={"file": (path.name, body)})
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/imports/{r.json()['job_id']}"
    assert r.json()["request"] == {"name": path.name, "format": fmt, "size_bytes": len(body), "force": False}
    job = _wait_done(test_db_api, r.headers["Location"])
    assert job["status"] == "done", job
    result = job["result"]
    assert (result["events_stored"], result["duplicates"], result["dead_lettered"]) == (1500, 0, 0)
    assert job["progress"]["done"] == job["progress"]["total"] > 0
    stored = db.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM device_state)").fetchone()[0]
    assert stored == 1500
    assert db.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0  # rollups refreshed

    again = _wait_done(
        test_db_api, test_db_api.post("/v1/imports", files={"file": ("copy" + path.suffix, body)}).headers["Location"]
    )
    assert again["result"]["skipped"] is True
    forced = test_db_api.post(f"/v1/imports?force=true&format={fmt}", files={"file": ("export.bin", body)})
    forced_job = _wait_done(test_db_api, forced.headers["Location"])
    assert (forced_job["result"]["events_stored"], forced_job["result"]["duplicates"]) == (0, 1500)
    assert (
        db.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM device_state)").fetchone()[0] == 1500
    )


def test_keys_are_checked_before_the_body_and_only_admins_import(test_db_api) -> None:
    upload = {"file": ("h.csv", b"device_id,seq,ts,kind\n" * 1000)}
    anonymous = test_db_api.client.post("/v1/imports", files=upload)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"
    assert test_db_api.post("/v1/imports", role="product", files=upload).status_code == 403
    assert test_db_api.post("/v1/imports", role="pricing", files=upload).status_code == 403


def test_the_guard_plans_the_upload_route_with_admin_only_and_its_limit(stack) -> None:
    app = create_app(stack)
    guard = RequestGuard(app, settings=stack.api, metrics=ApiMetrics())
    plans = {(m, entry.path): plan for entry, plan in guard.plans(app) for m in entry.methods}
    plan = plans[("POST", "/v1/imports")]
    assert plan.roles == frozenset({"admin"})
    assert plan.max_body == stack.api.max_history_import_bytes > stack.api.max_body_bytes


@pytest.mark.parametrize(
    ("name", "body", "query", "message"),
    [
        ("history.txt", b'{"device_id": "dev-000"}\n', "", "cannot tell the format"),
        ("history.csv", b"device,when\ndev-000,2026-01-02T00:00:00Z\n", "", "missing device_id, seq, ts, kind"),
        ("history.parquet", b"device_id,seq\n", "", "not a Parquet file"),
        ("history.jsonl", b"\xff\xfe\x00garbage" * 10, "", "not UTF-8"),
        ("history.jsonl", b"", "", "is empty"),
        ("history.csv", b"device_id,seq,ts,kind\n", "?format=xml", "format"),
    ],
)
def test_files_that_cannot_be_imported_are_4xx_and_start_no_job(db, test_db_api, name, body, query, message) -> None:
    before = db.execute("SELECT count(*) FROM jobs WHERE kind = 'history_import'").fetchone()[0]
    r = test_db_api.post(f"/v1/imports{query}", files={"file": (name, body)})
    assert r.status_code == 422, r.text
    assert message in r.text
    assert db.execute("SELECT count(*) FROM jobs WHERE kind = 'history_import'").fetchone()[0] == before
    missing = test_db_api.get("/v1/imports/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404

"""POST /v1/dead-letters/replay: a fixed dead letter is re-ingested exactly once, in the request or as a job."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cxp.store.ingest import DeadLetter, write_batch
from cxp.store.registry import DeviceRow, upsert_devices
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import ACTIVATED, recent

pytestmark = pytest.mark.integration


def _count(db, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def test_a_fixed_dead_letter_is_replayed_once_through_the_api(db, registered, test_db_api, stack) -> None:
    ts = recent(10)
    fixed = batch_payload([usage(i, ts) for i in range(1, 51)])
    still_bad = batch_payload([{**usage(1, ts), "duration_s": -5}])
    # The gateway's dead letters as it writes them (topic prefix of the API's settings: `devices`).
    prefix = stack.mqtt.topic_prefix
    write_batch(
        db,
        messages=[],
        dead_letters=[
            DeadLetter(
                datetime.now(UTC), f"{prefix}/dev-077/telemetry", "dev-077", "unknown_device", "x", fixed, len(fixed)
            ),
            DeadLetter(
                datetime.now(UTC), f"{prefix}/dev-001/telemetry", "dev-001", "schema", "x", still_bad, len(still_bad)
            ),
        ],
    )
    assert test_db_api.post("/v1/dead-letters/replay", role="product", json={}).status_code == 403
    bad = test_db_api.post("/v1/dead-letters/replay", json={"limit": 0, "colour": "red"})
    assert bad.status_code == 422 and {tuple(d["loc"]) for d in bad.json()["error"]["details"]} == {
        ("body", "limit"),
        ("body", "colour"),
    }

    before = test_db_api.post("/v1/dead-letters/replay", json={}).json()
    assert (before["examined"], before["stored"], before["still_invalid"]) == (2, 0, 2)

    upsert_devices(db, devices=[DeviceRow("dev-077", "test-p1", "acc-1", ACTIVATED, "basic", "A")])  # the fix
    dry = test_db_api.post("/v1/dead-letters/replay", json={"dry_run": True}).json()
    assert (dry["stored"], dry["events_stored"], dry["dry_run"]) == (1, 50, True)
    assert _count(db, "SELECT count(*) FROM events") == 0
    only_schema = test_db_api.post("/v1/dead-letters/replay", json={"reason": "schema"}).json()
    assert (only_schema["examined"], only_schema["stored"]) == (1, 0)
    assert list(only_schema["still_invalid_sample"].values())[0].startswith("schema:")

    first = test_db_api.post("/v1/dead-letters/replay", json={})
    assert first.status_code == 200, first.text
    assert {k: first.json()[k] for k in ("examined", "stored", "still_invalid", "events_stored")} == {
        "examined": 2,
        "stored": 1,
        "still_invalid": 1,
        "events_stored": 50,
    }
    assert _count(db, "SELECT count(*) FROM events") == 50
    second = test_db_api.post("/v1/dead-letters/replay", json={}).json()
    assert (second["examined"], second["stored"], second["events_stored"]) == (1, 0, 0), "stored once"
    assert _count(db, "SELECT count(*) FROM events") == 50


def test_a_large_replay_runs_as_a_job_and_stores_each_letter_once(db, registered, test_db_api, stack) -> None:
    ts = recent(10)
    prefix = stack.mqtt.topic_prefix
    n = stack.api.sync_replay_letters + 50
    letters = [
        DeadLetter(datetime.now(UTC), f"{prefix}/dev-088/telemetry", "dev-088", "unknown_device", "x", p, len(p))
        for p in (batch_payload([usage(i, ts)]) for i in range(n))
    ]
    write_batch(db, messages=[], dead_letters=letters)
    upsert_devices(db, devices=[DeviceRow("dev-088", "test-p1", "acc-1", ACTIVATED, "basic", "A")])

    started = test_db_api.post("/v1/dead-letters/replay", json={"limit": 100_000})
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    assert location == started.json()["links"]["self"]

    def finished() -> dict | None:
        job = test_db_api.get(location).json()
        return job if job["status"] in ("done", "failed") else None

    assert wait_for(lambda: finished() is not None, timeout=60)
    job = finished()
    assert job["status"] == "done", job["error"]
    assert (job["result"]["examined"], job["result"]["stored"], job["result"]["events_stored"]) == (n, n, n)
    assert job["progress"] == {"done": n, "total": n}
    assert _count(db, "SELECT count(*) FROM events") == n
    assert _count(db, "SELECT count(*) FROM dead_letters WHERE replay_outcome = 'stored'") == n
    again = test_db_api.post("/v1/dead-letters/replay", json={"limit": 100_000})
    assert again.status_code == 200 and again.json()["examined"] == 0
    assert _count(db, "SELECT count(*) FROM events") == n
    assert test_db_api.get("/v1/dead-letters/replay/00000000-0000-0000-0000-000000000000").status_code == 404

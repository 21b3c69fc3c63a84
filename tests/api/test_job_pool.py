"""Background jobs run on a connection pool of their own (a long job never holds a request's connection) and
show their progress (rows written of rows to write) in their status while they run (issue 11)."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration


def _app(stack, *, db: dict | None = None, **api) -> tuple[TestClient, dict[str, str]]:
    settings = stack.model_copy(update={"api": stack.api.model_copy(update=api),
                                        "db": stack.db.model_copy(update=db or {})})
    with connect(stack.db) as conn:
        token = create_key(conn, name="pytest job pool", role="admin").token
    return TestClient(create_app(settings)), {"Authorization": f"Bearer {token}"}


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a speed check
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_running_job_holds_none_of_the_requests_connections_and_shows_its_progress(stack) -> None:
    # one connection in the requests' pool: a job that took it would leave every request waiting for 503
    client, headers = _app(stack, db={"pool_min": 1, "pool_max": 1}, pool_timeout_s=1.0, light_pool_size=1)
    seen: dict[str, str] = {}
    release, reported = threading.Event(), threading.Event()

    def job(conn, job_id, progress) -> dict:
        seen["application_name"] = conn.execute("SHOW application_name").fetchone()[0]
        conn.execute("CREATE TEMP TABLE held (x int)")  # inside the job's open transaction
        progress(3, 10)
        reported.set()
        assert release.wait(60)
        progress(10, 10)
        return {"ok": True}

    with client:
        submitted = client.app.state.jobs.submit(kind="backtest", request={}, fn=job, created_by=None)
        location = f"/v1/pricing/jobs/{submitted.job_id}"
        try:
            assert reported.wait(60), "the job did not start"
            # while the job runs (its transaction open), requests on the main pool are served
            for _ in range(3):
                r = client.get("/v1/experience/health", headers=headers, params={"level": "fleet"})
                assert r.status_code == 200, r.text
            status = client.get(location, headers=headers).json()
            assert status["status"] == "running" and status["progress"] == {"done": 3, "total": 10}
        finally:
            release.set()
        _wait(lambda: client.get(location, headers=headers).json()["status"] == "done", "the job did not finish")
        done = client.get(location, headers=headers).json()
        assert done["progress"] == {"done": 10, "total": 10}
        listed = client.get("/v1/pricing/jobs", headers=headers, params={"limit": 5}).json()["items"]
        assert {"done": 10, "total": 10} in [j["progress"] for j in listed]
    assert seen["application_name"] == "cxp-api-jobs"


def test_a_backtest_job_reports_its_bills_as_progress(pricing_fleet, stack, monkeypatch) -> None:
    from cxp.pricing.examples import example_plans
    from cxp.store import job_results

    monkeypatch.setattr(job_results, "PROGRESS_EVERY", 7)
    calls: list[int] = []
    original = job_results.write_bills

    def spy(conn, **kw):
        report = kw["progress"]
        return original(conn, **{**kw, "progress": lambda done: (calls.append(done), report(done))})

    monkeypatch.setattr(job_results, "write_bills", spy)
    body = {"plans": [p.model_dump(mode="json") for p in example_plans()[:3]],
            "period": {"start_month": "2026-01", "months": 2}, "cohort": {"product": "thermo-x1"}}
    client, headers = _app(stack, sync_backtest_limit=1)
    with client:
        r = client.post("/v1/pricing/backtests", headers=headers, json=body)
        assert r.status_code == 202, r.text
        assert r.json()["progress"] is None  # queued: it does not know its total yet
        location = r.headers["Location"]
        _wait(lambda: client.get(location, headers=headers).json()["status"] not in ("queued", "running"),
              "the job did not finish")
        job = client.get(location, headers=headers).json()
        assert job["status"] == "done", job["error"]
        total = client.get(f"{location}/bills", headers=headers, params={"limit": 1}).json()["total"]
    assert total > 14 and job["progress"] == {"done": total, "total": total}
    assert calls == list(range(7, total + 1, 7)), "progress after every 7 bills"

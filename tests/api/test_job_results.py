"""Backtest job bills in their own table: exact round trip, keyset pages, streamed CSV, status without bills, limits."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.api.jobs import job_error, list_jobs, read_job
from cxp.pricing.examples import example_plans
from cxp.store.apikeys import create_key
from cxp.store.db import connect
from cxp.store.job_results import write_bills

pytestmark = pytest.mark.integration

PERIOD = {"start_month": "2026-01", "months": 2}
BODY = {"plans": [p.model_dump(mode="json") for p in example_plans()[:4]], "period": PERIOD,
        "cohort": {"product": "thermo-x1"}, "baseline": "bundles"}


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _client(stack, **api):
    settings = stack.model_copy(update={"api": stack.api.model_copy(update=api)})
    with connect(stack.db) as conn:
        token = create_key(conn, name="pytest job results", role="pricing").token
    return TestClient(create_app(settings)), {"Authorization": f"Bearer {token}"}


def _finished_job(client: TestClient, headers: dict[str, str]) -> dict:
    r = client.post("/v1/pricing/backtests", headers=headers, json=BODY)
    assert r.status_code == 202, r.text
    job = r.json()
    deadline = time.monotonic() + 120  # a hang guard, not a speed check
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = client.get(r.headers["Location"], headers=headers).json()
    assert job["status"] == "done", job["error"]
    return job


def _keyset(client: TestClient, headers: dict[str, str], url: str, limit: int,
            **query: str) -> tuple[list[dict], list[int]]:
    items, sizes, cursor = [], [], None
    while True:
        params = {**query, "limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, headers=headers, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        sizes.append(len(body["items"]))
        cursor = body["next_cursor"]
        if cursor is None:
            return items, sizes


def test_job_bills_round_trip_page_and_stream_exactly(pricing_fleet, test_db_api, stack) -> None:
    inline = test_db_api.post("/v1/pricing/backtests", role="pricing", json=BODY)
    inline_rows = _rows(test_db_api.post("/v1/pricing/backtests?format=csv", role="pricing", json=BODY).text)
    assert inline.status_code == 200 and len(inline_rows) > 20
    client, headers = _client(stack, sync_backtest_limit=1)
    with client:
        job = _finished_job(client, headers)
        assert job["result"] == inline.json()
        bills_url = job["links"]["bills"]
        streamed = client.get(bills_url, headers=headers, params={"format": "csv"})
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/csv")
        assert _rows(streamed.text) == inline_rows
        # every bill exactly once, in order, whatever the page size; totals are the report's revenue
        items, sizes = _keyset(client, headers, bills_url, limit=7)
        assert [(b["plan"], b["account_id"], b["month"], b["bill"]) for b in items] == [
            (r["plan"], r["account_id"], r["month"], r["bill"]) for r in inline_rows]
        assert all(s == 7 for s in sizes[:-1]) and sizes[-1] <= 7
        for summary in job["result"]["summaries"]:
            revenue = sum((Decimal(b["bill"]) for b in items if b["plan"] == summary["plan_key"]), Decimal(0))
            assert revenue == Decimal(summary["revenue"]), summary["plan_key"]
        first = client.get(bills_url, headers=headers, params={"limit": 7}).json()
        assert first["total"] == len(inline_rows)
        # a plan's pages, by cursor and by offset, agree with its slice of the inline bills
        chosen = [r for r in inline_rows if r["plan"] == "ppu-graduated@v1"]
        assert 10 < len(chosen) < len(inline_rows)
        plan_items, _ = _keyset(client, headers, bills_url, limit=5, plan="ppu-graduated@v1")
        assert [(b["account_id"], b["month"], b["bill"]) for b in plan_items] == [
            (r["account_id"], r["month"], r["bill"]) for r in chosen]
        by_offset = client.get(bills_url, headers=headers, params={"plan": "ppu-graduated@v1", "limit": 5, "offset": 3})
        assert [b["bill"] for b in by_offset.json()["items"]] == [r["bill"] for r in chosen[3:8]]
        plan_csv = client.get(bills_url, headers=headers, params={"plan": "ppu-graduated@v1", "format": "csv"})
        assert _rows(plan_csv.text) == chosen
        unknown = client.get(bills_url, headers=headers, params={"plan": "nope@v1"}).json()
        assert unknown["items"] == [] and unknown["total"] == 0 and unknown["next_cursor"] is None
        # cursors are checked: garbage and another job's cursor are 422, not a 500 or a silent restart
        for bad in ("garbage", "Zm9vOmJhcg", first["next_cursor"][:-2] + "AA"):
            r = client.get(bills_url, headers=headers, params={"cursor": bad})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", (bad, r.text)
        other = client.get(f"/v1/pricing/jobs/{uuid.uuid4()}/bills", headers=headers,
                           params={"cursor": first["next_cursor"]})
        assert other.status_code == 404


def test_status_and_list_read_no_bills(pricing_fleet) -> None:
    conn = pricing_fleet.conn
    job_id = uuid.uuid4()
    conn.execute("INSERT INTO jobs (job_id, kind, status, request, summary) VALUES"
                 " (%s, 'backtest', 'done', '{}', '{\"report\": {\"x\": 1}}')", (job_id,))
    conn.execute("INSERT INTO job_bill_plans (job_id, plan_idx, plan_key, bills) VALUES (%s, 0, 'p@v1', 0)", (job_id,))
    # with the bill tables gone (inside a transaction rolled back after), status and list still answer
    with conn.transaction(force_rollback=True):
        conn.execute("DROP TABLE job_bills, job_bill_plans")
        job = read_job(conn, job_id)
        assert job is not None and job.status == "done" and job.summary == {"report": {"x": 1}}
        listed, total = list_jobs(conn, kind="backtest", limit=1000, offset=0)
        assert job_id in {j.job_id for j in listed} and total >= 1
    assert conn.execute("SELECT count(*) FROM job_bill_plans WHERE job_id = %s", (job_id,)).fetchone()[0] == 1
    conn.execute("DELETE FROM jobs WHERE job_id = %s", (job_id,))
    assert conn.execute("SELECT count(*) FROM job_bill_plans WHERE job_id = %s", (job_id,)).fetchone()[0] == 0


def test_oversize_backtest_is_422_naming_the_limit_and_queues_nothing(pricing_fleet, stack) -> None:
    jobs_before = pricing_fleet.conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    client, headers = _client(stack, sync_backtest_limit=1, max_backtest_size=10)
    with client:
        for fmt in ("json", "csv"):
            r = client.post("/v1/pricing/backtests", headers=headers, json=BODY, params={"format": fmt})
            assert r.status_code == 422, r.text
            assert "api.max_backtest_size" in r.json()["error"]["message"]
    assert pricing_fleet.conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before


def test_a_failed_job_does_not_show_database_error_text() -> None:
    db_error = psycopg.errors.ProgramLimitExceeded("total size of jsonb array elements exceeds the maximum")
    assert "jsonb" not in job_error(db_error) and "internal error" in job_error(db_error)
    assert job_error(ValueError("boom")) == "ValueError: boom"


def test_streamed_csv_neutralises_formula_cells(pricing_fleet, test_db_api) -> None:
    conn = pricing_fleet.conn
    job_id = uuid.uuid4()
    conn.execute("INSERT INTO jobs (job_id, kind, status, request, summary)"
                 " VALUES (%s, 'backtest', 'done', '{}', '{}')", (job_id,))
    rows = [(0, 0, "p@v1", "=HYPERLINK(1)", "@seg", date(2026, 1, 1), Decimal("-1.50"), "EUR"),
            (0, 1, "p@v1", "acct-2", None, date(2026, 2, 1), Decimal("2.00"), "EUR")]
    with conn.transaction():
        assert write_bills(conn, job_id=job_id, plan_keys=["p@v1"], rows=rows) == 2
    try:
        r = test_db_api.get(f"/v1/pricing/jobs/{job_id}/bills", role="pricing", params={"format": "csv"})
        assert r.status_code == 200
        assert _rows(r.text) == [
            {"plan": "p@v1", "account_id": "'=HYPERLINK(1)", "segment": "'@seg", "month": "2026-01-01", "bill": "-1.50",
             "currency": "EUR"},
            {"plan": "p@v1", "account_id": "acct-2", "segment": "", "month": "2026-02-01", "bill": "2.00",
             "currency": "EUR"}]
        page = test_db_api.get(f"/v1/pricing/jobs/{job_id}/bills", role="pricing").json()
        assert [b["account_id"] for b in page["items"]] == ["=HYPERLINK(1)", "acct-2"]  # JSON stays raw
        assert page["total"] == 2 and page["next_cursor"] is None
    finally:
        conn.execute("DELETE FROM jobs WHERE job_id = %s", (job_id,))
    # the job's bills go with it (a trigger: no per-row foreign-key check slows the COPY)
    assert conn.execute("SELECT count(*) FROM job_bills WHERE job_id = %s", (job_id,)).fetchone()[0] == 0

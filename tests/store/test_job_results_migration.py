"""Migration 008 moves the bills of jobs finished before it out of `jobs.result` into rows, exactly."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from psycopg.types.json import Jsonb

from cxp.pricing.core.backtest import backtest
from cxp.pricing.examples import example_plans
from cxp.store import job_results
from cxp.store.db import connect
from cxp.store.migrate import list_migrations
from cxp.tools.bench.backtest import synthetic_cube

pytestmark = pytest.mark.integration


def _old_bill_table(result) -> dict:
    """The compact jsonb form jobs stored before migration 008 (integer quanta per plan × account × month)."""
    return {"currency": result.currency, "rule": result.rule.model_dump(mode="json"),
            "plan_keys": list(result.plan_keys), "account_ids": list(result.cube.account_ids),
            "segments": list(result.cube.segments), "months": [m.isoformat() for m in result.cube.months],
            "active": result.cube.active_mask().astype(np.int8).tolist(),
            "quanta": {k: result.bills[k].tolist() for k in result.plan_keys}}


def test_migration_008_expands_old_job_results_into_rows(stack) -> None:
    cube = synthetic_cube(accounts=9, periods=4, seed=3)
    active = np.ones((9, 4), dtype=bool)
    active[2, :2] = active[5, 3] = False  # late start, early end
    result = backtest(cube=dataclasses.replace(cube, active=active), plans=example_plans()[:3])
    expected = result.rows()
    assert 0 < len(expected) < 9 * 4 * 3  # some account-months inactive: the mask is honoured
    migration = next(m for m in list_migrations() if m.version == 8)
    job_id = uuid.uuid4()
    with connect(stack.db) as conn, conn.transaction(force_rollback=True):
        # the schema as it was before 008, with one finished job in the old form
        conn.execute("DROP TRIGGER jobs_delete_bills ON jobs")
        conn.execute("DROP FUNCTION job_bills_delete()")
        conn.execute("DROP TABLE job_bills, job_bill_plans")
        conn.execute("ALTER TABLE jobs DROP COLUMN summary, ADD COLUMN result jsonb")
        conn.execute("INSERT INTO jobs (job_id, kind, status, request, result)"
                     " VALUES (%s, 'backtest', 'done', '{}', %s)",
                     (job_id, Jsonb({"report": {"baseline": "x"}, "bills": _old_bill_table(result)})))
        conn.execute(migration.sql)
        rows = job_results.bill_page(conn, job_id=job_id, limit=10_000)
        assert [(r.plan_key, r.account_id, r.segment, r.month, r.bill, r.currency) for r in rows] == [
            (e["plan"], e["account_id"], e["segment"], e["month"], e["bill"], e["currency"]) for e in expected]
        assert [(p.plan_key, p.bills) for p in job_results.plans(conn, job_id=job_id)] == [
            (k, len(expected) // 3) for k in result.plan_keys]
        assert conn.execute("SELECT summary FROM jobs WHERE job_id = %s", (job_id,)).fetchone()[0] == {
            "report": {"baseline": "x"}}

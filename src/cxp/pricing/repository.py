"""What the pricing lab keeps in the database: versioned plan definitions and experiment designs.

Tables `plan_versions` and `experiments` (migration 004). Definitions are stored as the validated
models' JSON (Decimals as exact text) and parsed back into `Plan` / `ExperimentDesign` on read.
psycopg errors become the store's exceptions; `PlanVersionConflict` (from `pricing.errors`) is raised here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cxp.pricing.core.experiments import ExperimentDesign
from cxp.pricing.core.plans import Plan
from cxp.pricing.errors import PlanVersionConflict, maps_numeric_errors
from cxp.store.errors import mapped_errors

_PLAN_KEY = re.compile(r"^(?P<plan_id>[A-Za-z0-9_.-]{1,64})@v(?P<version>[1-9][0-9]{0,8})$")


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """One stored plan version and who stored it when."""

    plan: Plan
    created_at: datetime
    created_by: str | None


@dataclass(frozen=True, slots=True)
class SavedPlan:
    """The outcome of saving: the stored version and whether this call created it."""

    stored: StoredPlan
    created: bool


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    """One stored experiment design."""

    design: ExperimentDesign
    created_at: datetime
    created_by: str | None


def _parse_plan_key(key: str) -> tuple[str, int] | None:
    """(plan_id, version) of a key `plan_id@vN`, or None when it is not one."""
    m = _PLAN_KEY.match(key)
    return (m["plan_id"], int(m["version"])) if m else None


_PLAN_COLUMNS = "definition, created_at, created_by"


def _plan(row: tuple[Any, ...]) -> StoredPlan:
    return StoredPlan(Plan.model_validate(row[0]), row[1], row[2])


def _same_definition(a: Plan, b: Plan) -> bool:
    """Equal apart from the version (Decimals compare by value: 2.99 equals 2.990)."""
    return a.model_copy(update={"version": b.version}) == b


@maps_numeric_errors
def save_plan(conn: psycopg.Connection, *, plan: Plan, version: int | None, created_by: str | None) -> SavedPlan:
    """Store `plan` as `version` (None = the next one); re-saving the latest definition stores nothing.

    A given version must be the next one, or an existing version with the same definition (then
    nothing is stored). Raises `PlanVersionConflict` otherwise.
    """
    with mapped_errors(), conn.transaction():
        # One writer per plan id at a time, so "next version" cannot be taken twice.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('plan_versions:' || %s, 0))", (plan.plan_id,))
        latest = conn.execute(
            f"SELECT {_PLAN_COLUMNS} FROM plan_versions WHERE plan_id = %s ORDER BY version DESC LIMIT 1",
            (plan.plan_id,),
        ).fetchone()
        latest_plan = _plan(latest) if latest else None
        next_version = latest_plan.plan.version + 1 if latest_plan else 1
        if version is None:
            if latest_plan and _same_definition(plan, latest_plan.plan):
                return SavedPlan(latest_plan, created=False)
            version = next_version
        elif version != next_version:
            row = conn.execute(
                f"SELECT {_PLAN_COLUMNS} FROM plan_versions WHERE plan_id = %s AND version = %s",
                (plan.plan_id, version),
            ).fetchone()
            if row is not None and _same_definition(plan, _plan(row).plan):
                return SavedPlan(_plan(row), created=False)
            taken = "exists with a different definition" if row is not None else "is not the next version"
            raise PlanVersionConflict(
                f"version {version} of plan {plan.plan_id!r} {taken}; the next version is {next_version} "
                "(or omit version to store the next one)"
            )
        stored = plan.model_copy(update={"version": version})
        row = conn.execute(
            f"INSERT INTO plan_versions (plan_id, version, definition, created_by) VALUES (%s, %s, %s, %s) "
            f"RETURNING {_PLAN_COLUMNS}",
            (stored.plan_id, version, Jsonb(stored.model_dump(mode="json")), created_by),
        ).fetchone()
    return SavedPlan(_plan(row), created=True)


@maps_numeric_errors
def get_plan(conn: psycopg.Connection, *, plan_id: str, version: int | None = None) -> StoredPlan | None:
    """One version of a plan (None = the latest), or None when there is no such plan or version."""
    with mapped_errors():
        row = conn.execute(
            f"SELECT {_PLAN_COLUMNS} FROM plan_versions WHERE plan_id = %(plan_id)s "
            "AND (%(version)s::int IS NULL OR version = %(version)s::int) ORDER BY version DESC LIMIT 1",
            {"plan_id": plan_id, "version": version},
        ).fetchone()
    return _plan(row) if row else None


@maps_numeric_errors
def get_plans_by_key(conn: psycopg.Connection, *, keys: list[str]) -> dict[str, Plan]:
    """The stored plans among `keys` (`plan_id@vN`), by key; unknown or malformed keys are left out."""
    pairs = [p for p in (_parse_plan_key(k) for k in dict.fromkeys(keys)) if p is not None]
    if not pairs:
        return {}
    with mapped_errors():
        rows = conn.execute(
            "SELECT v.definition FROM plan_versions v JOIN unnest(%s::text[], %s::int[]) AS k(plan_id, version) "
            "USING (plan_id, version)",
            ([p for p, _ in pairs], [v for _, v in pairs]),
        ).fetchall()
    plans = [Plan.model_validate(r[0]) for r in rows]
    return {p.key: p for p in plans}


@maps_numeric_errors
def list_latest_plans(
    conn: psycopg.Connection, *, prefix: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[StoredPlan], int]:
    """The latest version of every plan (whose id starts with `prefix`), by plan id, and how many plans there are."""
    params = {"prefix": prefix or "", "limit": limit, "offset": offset}
    where = "left(plan_id, length(%(prefix)s)) = %(prefix)s"
    with mapped_errors():
        rows = conn.execute(
            f"SELECT DISTINCT ON (plan_id) {_PLAN_COLUMNS} FROM plan_versions WHERE {where} "
            "ORDER BY plan_id, version DESC LIMIT %(limit)s OFFSET %(offset)s",
            params,
        ).fetchall()
        total = conn.execute(f"SELECT count(DISTINCT plan_id) FROM plan_versions WHERE {where}", params).fetchone()[0]
    return [_plan(r) for r in rows], total


@maps_numeric_errors
def list_plan_versions(
    conn: psycopg.Connection, *, plan_id: str, limit: int = 100, offset: int = 0
) -> tuple[list[StoredPlan], int]:
    """Every version of one plan, oldest first, and how many there are."""
    with mapped_errors():
        rows = conn.execute(
            f"SELECT {_PLAN_COLUMNS} FROM plan_versions WHERE plan_id = %s ORDER BY version LIMIT %s OFFSET %s",
            (plan_id, limit, offset),
        ).fetchall()
        total = conn.execute("SELECT count(*) FROM plan_versions WHERE plan_id = %s", (plan_id,)).fetchone()[0]
    return [_plan(r) for r in rows], total


_EXPERIMENT_COLUMNS = "design, created_at, created_by"


def _experiment(row: tuple[Any, ...]) -> StoredExperiment:
    return StoredExperiment(ExperimentDesign.model_validate(row[0]), row[1], row[2])


@maps_numeric_errors
def insert_experiment(
    conn: psycopg.Connection, *, design: ExperimentDesign, created_by: str | None
) -> StoredExperiment | None:
    """Store a new experiment design; None when its id is taken (designs are immutable once stored)."""
    with mapped_errors():
        row = conn.execute(
            f"INSERT INTO experiments (experiment_id, design, created_by) VALUES (%s, %s, %s) "
            f"ON CONFLICT (experiment_id) DO NOTHING RETURNING {_EXPERIMENT_COLUMNS}",
            (design.experiment_id, Jsonb(design.model_dump(mode="json")), created_by),
        ).fetchone()
    return _experiment(row) if row else None


@maps_numeric_errors
def get_experiment(conn: psycopg.Connection, *, experiment_id: str) -> StoredExperiment | None:
    """One experiment design, or None."""
    with mapped_errors():
        row = conn.execute(
            f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = %s", (experiment_id,)
        ).fetchone()
    return _experiment(row) if row else None


@maps_numeric_errors
def list_experiments(
    conn: psycopg.Connection, *, limit: int = 100, offset: int = 0
) -> tuple[list[StoredExperiment], int]:
    """Experiment designs, newest first, and how many there are."""
    with mapped_errors():
        rows = conn.execute(
            f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments ORDER BY created_at DESC, experiment_id LIMIT %s OFFSET %s",
            (limit, offset),
        ).fetchall()
        total = conn.execute("SELECT count(*) FROM experiments").fetchone()[0]
    return [_experiment(r) for r in rows], total


_GUARDRAIL_COLUMNS = (
    "look, arm, checked_at, as_of, information_fraction, spending, alpha, alpha_spent, boundary_z, z, estimate, "
    "tolerated_drop, stop"
)


@maps_numeric_errors
def lock_experiment(conn: psycopg.Connection, *, experiment_id: str) -> None:
    """Serialise guardrail looks at one experiment until the transaction ends."""
    with mapped_errors():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('cxp.guardrail'), hashtext(%s))", (experiment_id,))


@maps_numeric_errors
def insert_guardrail_checks(conn: psycopg.Connection, *, experiment_id: str, rows: list[dict[str, Any]]) -> None:
    """Record one look (one row per treatment arm)."""
    with mapped_errors(), conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO experiment_guardrail_checks (experiment_id, {_GUARDRAIL_COLUMNS}) VALUES "
            "(%(experiment_id)s, %(look)s, %(arm)s, now(), %(as_of)s, %(information_fraction)s, %(spending)s, "
            "%(alpha)s, %(alpha_spent)s, %(boundary_z)s, %(z)s, %(estimate)s, %(tolerated_drop)s, %(stop)s)",
            [{**r, "experiment_id": experiment_id} for r in rows],
        )


@maps_numeric_errors
def list_guardrail_checks(conn: psycopg.Connection, *, experiment_id: str) -> list[dict[str, Any]]:
    """Every recorded look at the experiment, oldest first (one dict per look × arm)."""
    names = [c.strip() for c in _GUARDRAIL_COLUMNS.split(",")]
    with mapped_errors():
        rows = conn.execute(
            f"SELECT {_GUARDRAIL_COLUMNS} FROM experiment_guardrail_checks WHERE experiment_id = %s ORDER BY look, arm",
            (experiment_id,),
        ).fetchall()
    return [dict(zip(names, r, strict=True)) for r in rows]

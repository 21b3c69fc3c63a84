"""Backtest job bills as rows: written with COPY, read one keyset page at a time or streamed from a cursor."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import psycopg
from psycopg import sql

from cxp.store.errors import mapped_errors

# The columns a bill row carries out, in CSV order.
BILL_FIELDS = ("plan_key", "account_id", "segment", "month", "bill", "currency")
_COPY_COLUMNS = ("job_id", "plan_idx", "row_idx", *BILL_FIELDS)
# Binary COPY: each value dumped once by its declared type, no text parsing on the server.
_COPY_TYPES = ("uuid", "int4", "int8", "text", "text", "text", "date", "numeric", "text")
# Rows a server-side cursor fetches per round trip while streaming.
STREAM_BATCH = 5000
# A writer reports its progress after every this many rows.
PROGRESS_EVERY = 100_000


@dataclass(frozen=True)
class BillRecord:
    """One account-month's bill under one plan, with its position (the keyset key) in the job."""

    plan_idx: int
    row_idx: int
    plan_key: str
    account_id: str
    segment: str | None
    month: date
    bill: Decimal
    currency: str


@dataclass(frozen=True)
class PlanBills:
    """A plan of a job and how many bills it has."""

    plan_idx: int
    plan_key: str
    bills: int


# (plan_idx, row_idx, plan_key, account_id, segment, month, bill, currency), in key order.
BillTuple = tuple[int, int, str, str, str | None, date, Decimal, str]


def write_bills(conn: psycopg.Connection, *, job_id: uuid.UUID, plan_keys: Iterable[str],
                rows: Iterable[BillTuple], progress: Callable[[int], None] | None = None,
                every: int | None = None) -> int:
    """Copy a job's bills in and record each plan's count; returns how many rows were written.

    `progress(rows written so far)` is called every `every` rows (bytes still in the COPY buffer count as written)."""
    counts: dict[int, int] = {}
    written, every = 0, every or PROGRESS_EVERY
    with mapped_errors(), conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY job_bills ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.SQL(", ").join(map(sql.Identifier, _COPY_COLUMNS)))) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                counts[row[0]] = counts.get(row[0], 0) + 1
                copy.write_row((job_id, *row))
                written += 1
                if progress is not None and written % every == 0:
                    progress(written)
        cur.executemany("INSERT INTO job_bill_plans (job_id, plan_idx, plan_key, bills) VALUES (%s, %s, %s, %s)",
                        [(job_id, i, key, counts.get(i, 0)) for i, key in enumerate(plan_keys)])
    return sum(counts.values())


def plans(conn: psycopg.Connection, *, job_id: uuid.UUID) -> list[PlanBills]:
    """A job's plans in order with their bill counts (empty: no bills stored)."""
    with mapped_errors():
        rows = conn.execute("SELECT plan_idx, plan_key, bills FROM job_bill_plans WHERE job_id = %s"
                            " ORDER BY plan_idx", (job_id,)).fetchall()
    return [PlanBills(*r) for r in rows]


def _where(*, job_id: uuid.UUID, plan_idx: int | None, after: tuple[int, int] | None) -> tuple[sql.Composable, dict]:
    # Two shapes rather than "x IS NULL OR …" so each stays a plain range on the primary key.
    params: dict = {"job": job_id}
    if plan_idx is None:
        cond = sql.SQL("job_id = %(job)s")
        if after is not None:
            cond = sql.SQL("{} AND (plan_idx, row_idx) > (%(p)s, %(r)s)").format(cond)
            params |= {"p": after[0], "r": after[1]}
    else:
        cond = sql.SQL("job_id = %(job)s AND plan_idx = %(plan)s")
        params["plan"] = plan_idx
        if after is not None:
            cond = sql.SQL("{} AND row_idx > %(r)s").format(cond)
            params["r"] = after[1] if after[0] == plan_idx else (-1 if after[0] < plan_idx else 2**62)
    return cond, params


def _select(cond: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT plan_idx, row_idx, {} FROM job_bills WHERE {} ORDER BY plan_idx, row_idx").format(
        sql.SQL(", ").join(map(sql.Identifier, BILL_FIELDS)), cond)


def bill_page(conn: psycopg.Connection, *, job_id: uuid.UUID, plan_idx: int | None = None,
              after: tuple[int, int] | None = None, offset: int = 0, limit: int) -> list[BillRecord]:
    """Up to `limit` bills in key order after the key `after` (keyset) and/or past `offset` rows."""
    cond, params = _where(job_id=job_id, plan_idx=plan_idx, after=after)
    query = sql.SQL("{} LIMIT %(limit)s OFFSET %(offset)s").format(_select(cond))
    with mapped_errors():
        rows = conn.execute(query, {**params, "limit": limit, "offset": offset}).fetchall()
    return [BillRecord(*r) for r in rows]


def stream_bills(conn: psycopg.Connection, *, job_id: uuid.UUID, plan_idx: int | None = None) -> Iterator[BillTuple]:
    """Every bill of a job in key order, fetched in batches from a server-side cursor (memory stays flat)."""
    cond, params = _where(job_id=job_id, plan_idx=plan_idx, after=None)
    with mapped_errors(), conn.transaction(), conn.cursor(name=f"job_bills_{uuid.uuid4().hex}") as cur:
        cur.itersize = STREAM_BATCH
        cur.execute(_select(cond), params)
        yield from cur

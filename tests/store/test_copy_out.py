"""copy_out: the same bytes as psycopg's own COPY, errors as psycopg raises them, the connection usable after."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest
from psycopg import sql

from cxp.store.copy_out import copy_out
from cxp.store.db import connect

QUERY = sql.SQL(
    "COPY (SELECT g AS n, CASE WHEN g %% 7 = 0 THEN NULL ELSE 'name, \"' || g || '\"' END AS label,"
    " %(day)s::date + g %% 30 AS day, g = ANY(%(picked)s) AS picked"
    " FROM generate_series(1, %(rows)s) AS g) TO STDOUT (FORMAT csv, NULL '\\N')"
)


def _psycopg_copy(conn: psycopg.Connection, params: dict) -> bytes:
    out = bytearray()
    with conn.cursor() as cur, cur.copy(QUERY, params) as copy:
        for block in copy:
            out += block
    return bytes(out)


@pytest.mark.parametrize("rows", [0, 1, 250_000])
def test_copy_out_returns_what_psycopg_copy_returns(db, rows):
    params = {"day": date(2026, 3, 1), "picked": list(range(0, 5_000, 3)), "rows": rows}
    data = copy_out(db, QUERY, params)
    assert data == _psycopg_copy(db, params)
    assert data.count(b"\n") == rows
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_a_sql_error_is_raised_as_psycopg_raises_it_and_the_connection_stays_usable(db):
    failing = sql.SQL("COPY (SELECT 1 / (g - %(at)s) FROM generate_series(1, 100000) AS g) TO STDOUT")
    with pytest.raises(psycopg.errors.DivisionByZero):
        copy_out(db, failing, {"at": 90_000})  # fails after many rows were sent
    assert not db.closed
    assert db.execute("SELECT 2").fetchone() == (2,)


def test_a_statement_that_is_not_copy_to_is_refused(db):
    with pytest.raises(psycopg.ProgrammingError, match="not a COPY TO"):
        copy_out(db, sql.SQL("SELECT 1"))
    assert db.execute("SELECT 3").fetchone() == (3,)


def test_copy_out_reads_inside_the_open_transaction(settings):
    with connect(settings.db, autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE t (x int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 3)")
        assert copy_out(conn, sql.SQL("COPY (SELECT x FROM t ORDER BY x) TO STDOUT")) == b"1\n2\n3\n"
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedTable):
            copy_out(conn, sql.SQL("COPY (SELECT x FROM t) TO STDOUT"))

"""`fetch_frame` reads results as CSV through COPY: every column type the analytics queries return comes out with
the dtype and the exact values the row path (Python objects per value) gives, NULLs, escapes and extremes included."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from cxp.analytics.queries._base import (
    _rows_frame,
    concurrently,
    fetch_frame,
    in_concurrent_part,
    lending_connections,
    own_connection,
    shared_reads,
    shared_value,
)
from cxp.store.db import connect

pytestmark = pytest.mark.integration

_VALUES = """
SELECT * FROM (VALUES
    (1::int, 9007199254740993::bigint, 2::smallint, 0.1::float8, 0.1::real, 't'::boolean, 'plain'::text,
     DATE '2026-03-01', TIMESTAMPTZ '2026-03-01 10:00:00.123456+02', TIMESTAMP '2026-03-01 10:00:00',
     12.345::numeric, '{"a": [1, "b"]}'::jsonb, 'x'::varchar),
    (2, -4611686018427387904, -3, 1e-300, 3.4028235e38, 'f', 'comma, "quotes", back\\slash, tab\t, newline
 and ''\\N''', DATE '1999-12-31', TIMESTAMPTZ '1999-12-31 23:59:59.999999+00', TIMESTAMP '1970-01-01 00:00:00',
     -0.5, '[1, {"c": [2]}]'::jsonb, ''),
    (3, 0, 0, 'NaN', '-Infinity', 't', '', DATE '2026-03-02', TIMESTAMPTZ '2026-03-02 00:00:00+00',
     TIMESTAMP '2026-03-02 00:00:00', 0, 'null'::jsonb, NULL)
) AS v(i, big, small, f8, f4, b, t, d, tz, ts, n, j, vc)
"""


@pytest.mark.parametrize("rows", ["i <= 3", "i <= 2", "i = 2", "i = 3", "false"])
def test_every_type_matches_the_row_path(db, rows):
    query = sql.SQL(f"SELECT * FROM ({_VALUES}) AS q WHERE {rows} ORDER BY i")
    fast = fetch_frame(db, query)
    with db.cursor() as cur:
        slow = _rows_frame(cur, query, None)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


def test_nulls_keep_the_row_paths_dtypes(db):
    query = sql.SQL(
        "SELECT * FROM (VALUES (1, 1::bigint, true, 'a', DATE '2026-01-01', TIMESTAMPTZ '2026-01-01 00:00+00', 1.5),"
        " (2, NULL, NULL, NULL, NULL, NULL, NULL)) AS v(i, big, b, t, d, tz, f) ORDER BY i"
    )
    fast = fetch_frame(db, query)
    with db.cursor() as cur:
        slow = _rows_frame(cur, query, None)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert fast["big"].dtype == "float64" and fast["b"].dtype == object  # ints with NULL → float, bools → objects


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati"])
def test_timestamps_in_the_sessions_time_zone_match_the_row_path(db, zone):
    query = sql.SQL(f"SELECT * FROM ({_VALUES}) AS q ORDER BY i")
    db.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(zone)))
    try:
        fast = fetch_frame(db, query)
        with db.cursor() as cur:
            slow = _rows_frame(cur, query, None)
    finally:
        db.execute("RESET TIME ZONE")
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert str(fast["tz"].dtype) == f"datetime64[us, {zone}]"


def test_a_value_the_csv_reader_cannot_type_goes_through_the_row_path(db):
    # Local mean time before 1854 in India: an offset with seconds, which the row path reads and Arrow does not
    query = sql.SQL("SELECT * FROM (VALUES (1, TIMESTAMPTZ '1800-01-01 00:00+00'), (2, NULL)) AS v(i, x) ORDER BY i")
    db.execute("SET TIME ZONE 'Asia/Kolkata'")
    try:
        text = db.execute("SELECT TIMESTAMPTZ '1800-01-01 00:00+00'::text").fetchone()[0]
        fast = fetch_frame(db, query)
        with db.cursor() as cur:
            slow = _rows_frame(cur, query, None)
    finally:
        db.execute("RESET TIME ZONE")
    assert text.endswith("+05:53:28")
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


def test_parameters_and_long_lists_are_bound(db):
    keys = list(range(5000))
    query = sql.SQL(
        "SELECT k, %(label)s::text AS label FROM unnest(%(keys)s::int[]) AS k WHERE k >= %(low)s ORDER BY k"
    )
    frame = fetch_frame(db, query, {"keys": keys, "label": "it's", "low": 4990})
    assert frame["k"].tolist() == keys[4990:] and set(frame["label"]) == {"it's"}


def test_a_type_it_does_not_convert_goes_through_the_row_path(db):
    frame = fetch_frame(db, sql.SQL("SELECT ARRAY[1, 2] AS a, INTERVAL '1 hour' AS span"))
    assert frame["a"].tolist() == [[1, 2]] and frame["span"].iloc[0].total_seconds() == 3600


def test_shared_reads_run_a_repeated_read_once_and_hand_out_copies(db):
    db.execute("CREATE TEMP SEQUENCE shared_reads_probe")
    query = sql.SQL("SELECT nextval('shared_reads_probe') AS n, %(k)s::int AS k")
    with shared_reads():
        first = fetch_frame(db, query, {"k": 1})
        first.loc[0, "n"] = -1  # a caller's change stays its own
        again = fetch_frame(db, query, {"k": 1})
        other = fetch_frame(db, query, {"k": 2})
        fits = [shared_value(("fit", 1), lambda: {"calls": [1]}) for _ in range(2)]
    assert again["n"].tolist() == [1] and other["n"].tolist() == [2]
    assert fits[0] == fits[1] and fits[0] is not fits[1]
    assert fetch_frame(db, query, {"k": 1})["n"].tolist() == [3]  # outside the block every read runs


def test_concurrent_parts_share_one_connection_and_each_read_runs_once(db):
    db.execute("CREATE TEMP SEQUENCE concurrent_probe")
    query = sql.SQL("SELECT nextval('concurrent_probe') AS n, pg_sleep(0.05), %(k)s::int AS k")
    threads: set[str] = set()

    def part(k: int) -> tuple[int, bool]:
        threads.add(threading.current_thread().name)
        # every part asks for the shared read (k=0) while another may be running it: it runs once
        shared = fetch_frame(db, query, {"k": 0})["n"].iloc[0]
        return int(fetch_frame(db, query, {"k": k})["k"].iloc[0]) * 100 + int(shared), in_concurrent_part()

    with shared_reads():
        got = concurrently(**{f"p{k}": (lambda k=k: part(k)) for k in range(1, 5)})
    assert list(got) == ["p1", "p2", "p3", "p4"]
    shared_n = {value % 100 for value, _ in got.values()}
    assert len(shared_n) == 1, "the read all parts share ran once"
    assert [value // 100 for value, _ in got.values()] == [1, 2, 3, 4]
    assert all(inside for _, inside in got.values()) and not in_concurrent_part()
    assert len(threads) > 1 and threading.current_thread().name not in threads
    assert db.execute("SELECT nextval('concurrent_probe')").fetchone()[0] == 6  # 1 shared + 4 own reads before


def test_a_failing_part_raises_after_every_part_has_finished(db):
    finished = threading.Event()

    def slow() -> int:
        db.execute("SELECT pg_sleep(0.2)")
        finished.set()
        return 1

    def failing() -> int:
        raise ValueError("part failed")

    with pytest.raises(ValueError, match="part failed"):
        concurrently(failing=failing, slow=slow)
    assert finished.is_set(), "no part is left using the connection"
    assert db.execute("SELECT 1").fetchone()[0] == 1


def test_parts_inside_a_shared_computation_run_in_its_thread():
    def names() -> dict:
        here = threading.get_ident()
        return concurrently(a=lambda: threading.get_ident() == here, b=lambda: threading.get_ident() == here)

    with shared_reads():
        nested = concurrently(x=names, y=lambda: None)["x"]  # a part's own parts: threads of their own
        in_slot = concurrently(x=lambda: shared_value(("names",), names), y=lambda: None)["x"]
    assert nested == {"a": False, "b": False}
    assert in_slot == {"a": True, "b": True}, "its parts could wait for the slot their caller computes"


def test_in_a_transaction_the_failing_part_is_raised_not_the_parts_it_failed(db):
    def later() -> None:
        threading.Event().wait(0.2)  # after the other part's statement has failed the transaction
        db.execute("SELECT 1")

    def failing() -> None:
        db.execute("SELECT 1 / 0")

    with pytest.raises(psycopg.errors.DivisionByZero), db.transaction():
        concurrently(later=later, failing=failing)


def _backend(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_own_connection_borrows_a_lent_connection_only_when_one_is_free_and_outside_a_transaction(db, settings):
    lent: list[str] = []

    @contextmanager
    def lend(spare):
        lent.append("asked")
        yield spare

    with connect(settings.db) as spare:
        with own_connection(db) as conn:
            assert conn is db  # nobody lends
        with lending_connections(lambda: lend(spare)), own_connection(db) as conn:
            assert conn is spare and _backend(conn) != _backend(db)
        with lending_connections(lambda: lend(None)), own_connection(db) as conn:
            assert conn is db  # the lender had none free
        asked = len(lent)
        with db.transaction(), lending_connections(lambda: lend(spare)), own_connection(db) as conn:
            assert conn is db  # its reads must see the transaction's snapshot
        assert len(lent) == asked == 2

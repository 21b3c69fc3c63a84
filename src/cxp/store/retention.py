"""Retention by dropping whole raw-data chunks (no retention policies in the Apache-2 edition)."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from cxp.store.errors import StoreError, mapped_errors

RAW_HYPERTABLES = ("events", "device_state")


def drop_old_chunks(conn: psycopg.Connection, *, keep_days: int) -> dict[str, int]:
    """Drop raw chunks wholly older than `keep_days` and the seq registry's rows that old; rollups are kept.
    Returns chunks dropped per table."""
    if keep_days < 1:
        raise StoreError("retention must keep at least 1 day")
    dropped: dict[str, int] = {}
    with mapped_errors(), conn.transaction():
        for table in RAW_HYPERTABLES:
            rows = conn.execute("SELECT drop_chunks(%s::regclass, older_than => now() - %s::interval)",
                                (table, timedelta(days=keep_days))).fetchall()
            dropped[table] = len(rows)
        # The seq identity of events past the horizon goes with them (a re-send that old is refused as too_old when
        # retention is configured); events kept in a partly newer chunk still meet their own unique index.
        conn.execute("DELETE FROM device_seq WHERE ts < now() - %s::interval", (timedelta(days=keep_days),))
    return dropped

"""`cxp stack up` leaves the PostgreSQL log free of FATALs of its own making."""

from __future__ import annotations

import time

import pytest

from cxp.stack.local import start_db

pytestmark = pytest.mark.integration


def test_starting_the_database_logs_no_fatal(settings):
    log = settings.stack.dir / "pg" / "postgres.log"
    before = log.stat().st_size
    start_db(settings)  # running already: probes readiness and ensures the role and database, as stack up does
    added = log.read_bytes()[before:].decode(errors="replace")
    assert "FATAL" not in added, added


def test_full_page_images_are_compressed_with_lz4_where_the_server_has_it(settings, db):
    from cxp.stack.local import _pg_bin, _wal_compression

    start_db(settings)  # running already: the settings file is rewritten and reloaded
    expected = _wal_compression(_pg_bin())
    assert expected in ("lz4", "pglz")
    for _ in range(100):  # a reload reaches each session at its next command, once the server has read the file
        if (shown := db.execute("SHOW wal_compression").fetchone()[0]) == expected:
            break
        time.sleep(0.1)
    assert shown == expected

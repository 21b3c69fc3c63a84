"""`cxp stack up` leaves the PostgreSQL log free of FATALs of its own making."""

from __future__ import annotations

import pytest

from cxp.stack.local import start_db

pytestmark = pytest.mark.integration


def test_starting_the_database_logs_no_fatal(settings):
    log = settings.stack.dir / "pg" / "postgres.log"
    before = log.stat().st_size
    start_db(settings)  # running already: probes readiness and ensures the role and database, as stack up does
    added = log.read_bytes()[before:].decode(errors="replace")
    assert "FATAL" not in added, added

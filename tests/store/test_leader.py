"""The leader lock on the real database: one holder at a time, visible to all, released with its connection."""

from __future__ import annotations

import pytest

from cxp.store.leader import LeaderLock, get_leader
from tests.fixtures.gateway import wait_for

pytestmark = pytest.mark.integration


def test_one_holder_at_a_time_and_the_lock_moves_when_the_holder_goes(db, settings):
    key = 0x6378_71FF  # a key of this test's own: a running gateway's leader lock is not disturbed
    a, b = (LeaderLock(settings.db, name=n, key=key) for n in ("member-a", "member-b"))
    try:
        assert a.hold() is True
        assert b.hold() is False
        assert a.hold() is True  # still alive: holding is idempotent
        assert get_leader(db, key=key).name == "member-a"
        a.release()
        assert wait_for(lambda: b.hold(), timeout=10)
        assert get_leader(db, key=key).name == "member-b"
        assert a.hold() is False
    finally:
        a.release()
        b.release()
    assert wait_for(lambda: get_leader(db, key=key) is None, timeout=10)


def test_a_holder_whose_connection_is_killed_loses_the_lead(db, settings):
    key = 0x6378_71FE
    a, b = (LeaderLock(settings.db, name=n, key=key) for n in ("member-a", "member-b"))
    try:
        assert a.hold()
        pid = get_leader(db, key=key).backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the connection dies, as with a killed process
        assert wait_for(lambda: b.hold(), timeout=10)
        assert a.hold() is False  # it notices, and does not take the lock back while b holds it
    finally:
        a.release()
        b.release()

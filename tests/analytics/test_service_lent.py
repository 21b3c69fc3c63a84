"""Views whose longest part reads on a second connection when one is lent (the API lends one of its pool): the
same answer as on one connection, and the second connection is really used."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from cxp.analytics import service
from cxp.analytics.queries import lending_connections
from cxp.store.db import create_pool, idle_connection

pytestmark = pytest.mark.integration

VIEWS = {
    "report": lambda conn: service.get_fleet_report(conn=conn),
    "personas": lambda conn: service.get_segments(conn=conn),
    "capability ladder": lambda conn: service.get_capability_ladder(conn=conn),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_view_with_a_lent_connection_gives_the_same_answer(fleet_conn, fleet_settings, loaded_fleet, view) -> None:
    alone = VIEWS[view](fleet_conn)
    used: list[int] = []

    @contextmanager
    def lend():
        with idle_connection(pool) as spare:
            used.append(spare.execute("SELECT pg_backend_pid()").fetchone()[0])
            yield spare

    spare_db = fleet_settings.db.model_copy(update={"pool_min": 1, "pool_max": 1})
    with create_pool(spare_db, name="t-lent") as pool, lending_connections(lend):
        lent = VIEWS[view](fleet_conn)
    assert used and used[0] != fleet_conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert lent == alone

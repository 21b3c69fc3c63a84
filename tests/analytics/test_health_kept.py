"""Kept health rows (`health_weekly`): the answer read from them equals the one computed afresh, after late data,
registry edits and moves; a writer that lost a race with the rollup refresh keeps nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import errors as pg_errors

from cxp.analytics import service
from cxp.analytics.core.trajectories import trajectories_at
from cxp.analytics.models import HealthReport
from cxp.analytics.queries.health_weekly import KEPT_COLUMNS, write_health_weeks
from cxp.analytics.query import AnalyticsQuery
from cxp.store.db import connect
from cxp.store.registry import DeviceRow, ProductRow, TouchpointRow, upsert_devices, upsert_products
from cxp.store.rollups import refresh_all_pending
from tests.fixtures.health_fleet import FIRST_DAY, LAST_DAY, health_fleet, late_use, product
from tests.fixtures.planting import plant_days
from tests.fixtures.stack import ACTIVATED

pytestmark = pytest.mark.integration
SCOPES = (AnalyticsQuery(end=LAST_DAY), AnalyticsQuery(end=LAST_DAY, product="test-p1"),
          AnalyticsQuery(end=LAST_DAY, device="dev-002"))


def _health(db: psycopg.Connection, scope: AnalyticsQuery, level: str = "device") -> HealthReport:
    return service.get_health(conn=db, query=scope, level=level, weeks=10)  # type: ignore[arg-type]


def _afresh(db: psycopg.Connection, scope: AnalyticsQuery, level: str = "device") -> HealthReport:
    """The answer with nothing kept (computed from the rollups alone); the kept rows are put back afterwards."""
    with db.transaction():
        db.execute("CREATE TEMP TABLE _saved AS SELECT * FROM health_weekly")
        db.execute("DELETE FROM health_weekly")
    try:
        with db.transaction():  # read committed inside a transaction: nothing is written back
            return _health(db, scope, level)
    finally:
        with db.transaction():
            db.execute("DELETE FROM health_weekly")
            db.execute("INSERT INTO health_weekly SELECT * FROM _saved")
            db.execute("DROP TABLE _saved")


def _kept(db: psycopg.Connection) -> tuple[int, int]:
    return db.execute("SELECT count(*) FILTER (WHERE NOT stale), count(*) FILTER (WHERE stale)"
                      " FROM health_weekly").fetchone()


def _assert_trajectory_as_from_all_history(db: psycopg.Connection) -> None:
    """The device rows' trajectory equals `trajectories_at` over every stored day (no kept rows, no window seed)."""
    frame, _ = service.health_frames(conn=db, query=SCOPES[0], level="device", weeks=10)
    expected_days = dict(db.execute("SELECT d.device_key, p.expected_active_days_per_week FROM devices d"
                                    " JOIN products p USING (product_id)").fetchall())
    usage = pd.DataFrame(db.execute("SELECT device_key, day, usage_count FROM rollup_daily WHERE active").fetchall(),
                         columns=["entity_id", "day", "uses"])
    reference = trajectories_at(usage=usage, rows=pd.DataFrame({
        "entity_id": frame["device_key"].to_numpy(),
        "period_end": frame["period_end"].to_numpy(),
        "activated_on": pd.to_datetime(frame["activated_at"], utc=True).dt.tz_localize(None).dt.normalize(),
        "expected_active_days_per_week": frame["device_key"].map(expected_days).astype(float).to_numpy(),
        "last_use_before": pd.NaT,
    }))
    for column in ("days_since_last_use", "slope_score", "trajectory"):
        np.testing.assert_array_equal(frame[column].astype(float).to_numpy(), reference[column].to_numpy(), column)


def _assert_kept_equals_afresh(db: psycopg.Connection) -> None:
    _assert_trajectory_as_from_all_history(db)
    for scope in SCOPES:
        for level in ("device", "product"):
            kept = _health(db, scope, level)
            assert kept.scores, scope
            assert repr(kept) == repr(_afresh(db, scope, level)), (scope, level)
            assert repr(_health(db, scope, level)) == repr(kept), "read again from the kept rows"


@pytest.mark.parametrize("seed", [3, 11])
def test_kept_health_equals_the_answer_computed_afresh_through_late_data_and_registry_edits(db, seed):
    devices = health_fleet(db, seed)
    assert _kept(db)[0] == 0 and _kept(db)[1] > 0, "rolling the history up marked its weeks, none kept yet"
    first = _health(db, SCOPES[0])
    fresh = _kept(db)[0]
    assert fresh >= 6 * 8 - 8, "every whole week over in the window was kept"
    _assert_kept_equals_afresh(db)

    # The kept rows are what is read: a changed kept slope changes the answer.
    db.execute("UPDATE health_weekly SET slope_per_day = -1 WHERE slope_per_day IS NOT NULL")
    assert repr(_health(db, SCOPES[0])) != repr(first)
    db.execute("DELETE FROM health_weekly")
    assert repr(_health(db, SCOPES[0])) == repr(first)

    # Late data in an early week: that week and the three after it go stale, nothing else.
    late_day = FIRST_DAY + timedelta(days=20)
    late = {d: devices[d] for d in ("dev-001", "dev-004")}
    late_use(db, late, late_day, seq=100_000)
    late_week = late_day - timedelta(days=late_day.weekday())
    marked = db.execute("SELECT d.device_id, k.week FROM health_weekly k JOIN devices d USING (device_key)"
                        " WHERE k.stale ORDER BY 1, 2").fetchall()
    assert marked == [(d, late_week + timedelta(days=7 * n)) for d in sorted(late) for n in range(4)]
    _assert_kept_equals_afresh(db)
    restale = db.execute("SELECT count(*) FROM health_weekly WHERE stale AND week >= %s", (FIRST_DAY,)).fetchone()[0]
    assert restale == 0, "the stale rows in the window were computed again and kept"

    # Registry edits the kept rows were fitted with: activation, expected days (daily → weekly trend points),
    # a latency target, a device moving to another product; each changes the answer.
    new_activation = FIRST_DAY + timedelta(days=25)
    edits = (
        lambda: upsert_devices(db, devices=[DeviceRow("dev-000", "test-p1", None, datetime.combine(
            new_activation, datetime.min.time(), tzinfo=UTC))]),
        lambda: upsert_products(db, products=[product(expected=2.0)]),
        lambda: upsert_products(db, products=[product(expected=2.0, brew_target=200.0)]),
        lambda: (upsert_products(db, products=[ProductRow("test-p2", "Other product", 3600, 6.0, [
            TouchpointRow("brew", "post_purchase", "brand", True, 900.0, None, None)])]),
                 upsert_devices(db, devices=[DeviceRow("dev-002", "test-p2", None, ACTIVATED)]),
                 refresh_all_pending(db)),
    )
    for number, edit in enumerate(edits):
        before = _health(db, SCOPES[0])
        edit()
        assert repr(_afresh(db, SCOPES[0])) != repr(before), f"edit {number} changes the answer"
        _assert_kept_equals_afresh(db)
        if number == 0:
            fitted = db.execute("SELECT DISTINCT k.activated_on FROM health_weekly k JOIN devices d USING (device_key)"
                                " WHERE d.device_id = 'dev-000' AND k.week >= %s AND NOT k.stale",
                                (new_activation,)).fetchall()
            assert fitted == [(new_activation,)], "its weeks were fitted again with the new activation"


def test_a_writer_that_read_before_a_refresh_marked_its_week_keeps_nothing(db, settings):
    devices = health_fleet(db, 5)
    _health(db, SCOPES[0])
    row = db.execute("SELECT device_key, week, " + ", ".join(KEPT_COLUMNS) + " FROM health_weekly"
                     " WHERE NOT stale ORDER BY week DESC LIMIT 1").fetchone()
    frame = pd.DataFrame([row], columns=["device_key", "week", *KEPT_COLUMNS])
    with connect(settings.db) as writer, pytest.raises(pg_errors.SerializationFailure), writer.transaction():
        writer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        writer.execute("SELECT count(*) FROM rollup_daily").fetchone()  # the writer's snapshot is taken
        # Meanwhile late data for that week is rolled up, which marks the row stale.
        device = next(d for d, k in devices.items() if k == row[0])
        late_use(db, {device: row[0]}, row[1], seq=200_000)
        write_health_weeks(writer, rows=frame)
    assert db.execute("SELECT stale FROM health_weekly WHERE device_key = %s AND week = %s", row[:2]).fetchone()[0]


def test_a_read_only_connection_answers_and_keeps_nothing(db):
    health_fleet(db, 7)
    with db.transaction():
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        answer = _health(db, SCOPES[0])
    assert answer.scores and _kept(db)[0] == 0
    assert repr(_health(db, SCOPES[0])) == repr(answer) and _kept(db)[0] > 0


def test_kept_weeks_beside_a_week_under_way_without_any_answer(db, registered) -> None:
    # No feedback at all: the week under way's trailing answer counts are an empty read, next to kept weeks whose
    # counts are numbers (this answered a 500 from the API once kept rows existed).
    today = datetime.now(UTC).date()
    plant_days(db, registered, first=today - timedelta(days=30), last=today - timedelta(days=1))
    refresh_all_pending(db)
    first = _health(db, AnalyticsQuery())  # computes and keeps the whole weeks
    assert db.execute("SELECT count(*) FROM health_weekly WHERE NOT stale").fetchone()[0] > 0
    again = _health(db, AnalyticsQuery())  # reads them beside the week under way
    assert again.scores == first.scores and len(again.scores) > 5
    assert all(s.components["voice"] is None for s in again.scores)  # no answers: no voice component

"""A small simulated fleet with planted truth for the alert rules judged by analytics, in a database of its own.

300 devices × 21 days from Monday 2025-06-02 (three whole ISO weeks), built by the simulator with two planted
incidents instead of random ones:

* `WEEK_OUTAGE`: brew-c3's core `brew` fails on every device for the whole second week (a health drop);
* `INCIDENT`: thermo-x1's `heating_cycle` fails with RELAY_FAULT on 90 % of its devices on Thursday of the third
  week, 08:00–12:00 UTC (the disruption detector's incident; every device hit sends its recovery within 10 min
  of the end).

And `STOPPED`: three thermo-x1 devices whose telemetry stops after the first week (they enter the churn-risk list).
Telemetry is written through the gateway's write path (`store.ingest.write_batch`) up to `CUTOFF` (three hours into
the incident); the rest is kept for the test that lets the incident recover.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from cxp.contract.models import Severity
from cxp.device_sim import build_fleet, plan_messages
from cxp.device_sim.fleet import Fleet, Incident
from cxp.store.admin import truncate_data
from cxp.store.ingest import IngestMessage, write_batch
from cxp.store.rollups import refresh_all_pending
from cxp.tools.fleet import register_fleet

START = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
DAYS = 21
WEEK_OUTAGE = Incident(
    "plant-week",
    "brew-c3",
    "brew",
    "GRINDER_JAM",
    Severity.ERROR,
    START + timedelta(days=7),
    START + timedelta(days=14),
    0.9,
    1.0,
)
INCIDENT = Incident(
    "plant-inc",
    "thermo-x1",
    "heating_cycle",
    "RELAY_FAULT",
    Severity.CRITICAL,
    START + timedelta(days=17, hours=8),
    START + timedelta(days=17, hours=12),
    0.8,
    0.9,
)
CUTOFF = INCIDENT.start + timedelta(hours=3)
STOP_AFTER = START + timedelta(days=7)
STOPPED_COUNT = 3


@dataclass
class SimFleet:
    """The fleet, the devices planted to stop, and the telemetry not written yet (after `CUTOFF`)."""

    fleet: Fleet
    stopped: tuple[str, ...]
    pending: list[IngestMessage]

    def write_until(self, conn: psycopg.Connection, until: datetime) -> int:
        """Write the pending messages sent up to `until` and refresh the rollups; return how many."""
        due = [m for m in self.pending if m.received_at <= until.timestamp()]
        self.pending = [m for m in self.pending if m.received_at > until.timestamp()]
        _write(conn, due)
        return len(due)


def _write(conn: psycopg.Connection, messages: list[IngestMessage]) -> None:
    for i in range(0, len(messages), 1000):
        result = write_batch(conn, messages=messages[i : i + 1000])
        assert result.dead_lettered == 0, result
    refresh_all_pending(conn)


def _messages(fleet: Fleet, keys: dict[str, tuple[int, float]]) -> Iterator[IngestMessage]:
    # Coarse uploads for the first two weeks (fast to write), hourly ones from the third on (the cut-off is sharp).
    third_week = START + timedelta(days=14)
    for start, end, interval in ((None, third_week, 6 * 3600), (third_week, None, 3600)):
        for m in plan_messages(
            fleet=fleet, start=start, end=end, upload_interval_s=interval, max_events_per_message=1000
        ):
            key, activated = keys[m.device_id]
            yield IngestMessage("sim", m.device_id, key, m.payload, m.due_ms / 1000.0 + 1.0, activated)


def load(conn: psycopg.Connection, *, seed: int) -> SimFleet:
    """Empty the database, register the fleet and write its telemetry up to `CUTOFF`."""
    built = build_fleet(seed=seed, devices=300, start=START, days=DAYS, incidents=0, experience_churn=0.0)
    fleet = dataclasses.replace(built, incidents=(WEEK_OUTAGE, INCIDENT))
    truncate_data(conn)
    register_fleet(conn, fleet=fleet, lived_truth=False)
    keys = {
        d: (k, a.timestamp())
        for d, k, a in conn.execute("SELECT device_id, device_key, activated_at FROM devices").fetchall()
    }
    # Three thermostats active from the first day stop after the first week (the planted churn).
    first_week = [d for d in fleet.devices if d.product == "thermo-x1" and d.activated_at < START + timedelta(days=1)]
    stopped = tuple(sorted(d.device_id for d in first_week)[:STOPPED_COUNT])
    messages = [
        m for m in _messages(fleet, keys) if not (m.device_id in stopped and m.received_at > STOP_AFTER.timestamp())
    ]
    sim = SimFleet(fleet, stopped, messages)
    sim.write_until(conn, CUTOFF)
    conn.execute("ANALYZE")
    return sim

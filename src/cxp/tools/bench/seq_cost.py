"""What the seq registry (migration 015) costs the store: the gateway's write path, timed alone.

The same messages (a simulated fleet's, validated and re-serialised as the gateway does) are written batch by
batch with `write_batch` as it is, then with the statement it ran before migration 015 (events keyed on
(device, ts, seq), no `device_seq`, no sequence counters), alternated `--rounds` times into emptied tables; the
database time per 1,000 messages is compared. End-to-end figures: `cxp bench ingest`.

`cxp bench seq-cost` prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from datetime import UTC, datetime, timedelta

from cxp.contract.validate import Accepted, validate_message
from cxp.core.config import Settings
from cxp.device_sim import build_fleet, plan_messages
from cxp.store import ingest
from cxp.store.admin import truncate_data
from cxp.store.db import connect
from cxp.store.ingest import IngestMessage, write_batch
from cxp.store.migrate import apply_migrations
from cxp.store.registry import DeviceCache
from cxp.tools.fleet import register_fleet

BENCH_DB = "cxp_bench"

# The statement of store/ingest.py before migration 015, kept here as the baseline (plus the two columns that
# write_batch reads now: no conflicts, no race).
_BEFORE_015 = """
WITH ev AS MATERIALIZED (
    SELECT s.msg_no, s.device_key, e.*
    FROM ingest_staging s
    CROSS JOIN LATERAL json_to_recordset(s.payload -> 'events') AS e(
        seq bigint, ts timestamptz, kind text, touchpoint text, success boolean, duration_s real,
        quantity double precision, unit text, latency_ms real, code text, severity text,
        nps smallint, csat smallint, ces smallint, stage text, detail jsonb,
        battery_pct real, signal_dbm real, uptime_s double precision, energy_wh double precision,
        metrics jsonb)
),
verdict AS MATERIALIZED (
    SELECT s.msg_no,
           CASE WHEN b.last_ts > to_timestamp(s.received_at + %(skew)s) THEN 'future_timestamp'
                WHEN b.first_ts < to_timestamp(s.activated_at) THEN 'before_activation'
                WHEN b.first_ts < to_timestamp(s.received_at - %(max_age)s::float8) THEN 'too_old'
           END AS reason,
           b.first_ts, b.last_ts, to_timestamp(s.received_at) AS received, to_timestamp(s.activated_at) AS activated
    FROM ingest_staging s
    JOIN (SELECT msg_no, min(ts) AS first_ts, max(ts) AS last_ts FROM ev GROUP BY msg_no) b USING (msg_no)
),
good AS (
    SELECT ev.* FROM ev JOIN verdict v USING (msg_no) WHERE v.reason IS NULL
),
new_events AS (
    INSERT INTO events (device_key, ts, seq, kind, touchpoint, success, duration_s, quantity, unit,
                        latency_ms, code, severity, nps, csat, ces, stage, detail)
    SELECT device_key, ts, seq, kind::event_kind, touchpoint,
           CASE WHEN kind = 'usage' THEN coalesce(success, true) END, duration_s, quantity, unit, latency_ms,
           code, CASE WHEN kind = 'error' THEN coalesce(severity, 'error') END, nps, csat, ces, stage,
           NULLIF(detail, '{}'::jsonb)
    FROM good WHERE kind <> 'state'
    ON CONFLICT DO NOTHING
    RETURNING device_key, ts
),
new_states AS (
    INSERT INTO device_state (device_key, ts, seq, battery_pct, signal_dbm, uptime_s, energy_wh, metrics)
    SELECT device_key, ts, seq, battery_pct, signal_dbm, uptime_s, energy_wh, NULLIF(metrics, '{}'::jsonb)
    FROM good WHERE kind = 'state'
    ON CONFLICT DO NOTHING
    RETURNING device_key, ts
),
dirty AS (
    INSERT INTO rollup_dirty (device_key, day)
    SELECT DISTINCT device_key, (ts AT TIME ZONE 'UTC')::date
    FROM (SELECT * FROM new_events UNION ALL SELECT * FROM new_states) AS n
)
SELECT (SELECT count(*) FROM good), (SELECT count(*) FROM new_events), (SELECT count(*) FROM new_states),
       (SELECT coalesce(json_agg(json_build_array(msg_no, reason, CASE reason
            WHEN 'future_timestamp' THEN format('event at %%s is after receipt %%s + %%s s',
                                                 last_ts, received, %(skew)s)
            WHEN 'before_activation' THEN format('event at %%s precedes activation %%s', first_ts, activated)
            ELSE format('event at %%s is older than the retention horizon (%%s s)', first_ts, %(max_age)s)
            END)), '[]') FROM verdict WHERE reason IS NOT NULL),
       '[]'::json, 0  -- no seq conflicts, no race: the columns write_batch reads now
"""


def _messages(settings: Settings, *, devices: int, days: int, count: int) -> list[IngestMessage]:
    start = (datetime.now(UTC) - timedelta(days=days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    fleet = build_fleet(seed=7, devices=devices, start=start, days=days)
    with connect(settings.db) as conn:
        truncate_data(conn)
        register_fleet(conn, fleet=fleet, lived_truth=False)
        cache = DeviceCache()
        cache.load(conn)
    out = []
    now = time.time()
    for m in itertools.islice(plan_messages(fleet=fleet, max_events_per_message=50), count):
        topic = f"devices/{m.device_id}/telemetry"
        verdict = validate_message(
            topic=topic, payload=m.payload, lookup_device=cache.lookup, max_payload_bytes=256 * 1024
        )
        assert type(verdict) is Accepted, verdict
        out.append(
            IngestMessage(
                topic, m.device_id, verdict.device_key, verdict.canonical, now, verdict.activated_epoch, m.payload
            )
        )
    return out


def _round(conn, messages: list[IngestMessage], batch: int) -> tuple[float, int]:
    """Seconds spent in write_batch for every batch, and events stored."""
    truncate_data(conn, registry=False)
    spent, stored = 0.0, 0
    for i in range(0, len(messages), batch):
        t0 = time.perf_counter()
        result = write_batch(conn, messages=messages[i : i + batch])
        spent += time.perf_counter() - t0
        stored += result.events_stored + result.states_stored
    return spent, stored


def run(*, devices: int, days: int, messages: int, batch: int, rounds: int) -> dict:
    """Alternate the current statement and the pre-015 one; database seconds per 1,000 messages for each."""
    env = Settings()
    settings = env.model_copy(update={"db": env.db.model_copy(update={"name": BENCH_DB})})
    with connect(settings.db) as conn:
        apply_migrations(conn)
    sample = _messages(settings, devices=devices, days=days, count=messages)
    current = ingest._CHECK_EXPAND_INSERT
    times: dict[str, list[float]] = {"with_seq_registry": [], "before_015": []}
    events = {}
    with connect(settings.db) as conn:
        for _ in range(rounds):
            for label, statement in (("with_seq_registry", current), ("before_015", _BEFORE_015)):
                ingest._CHECK_EXPAND_INSERT = statement
                try:
                    spent, stored = _round(conn, sample, batch)
                finally:
                    ingest._CHECK_EXPAND_INSERT = current
                times[label].append(spent / len(sample) * 1e6)
                events[label] = stored
        truncate_data(conn, registry=False)
    if events["with_seq_registry"] != events["before_015"]:
        raise SystemExit(f"the two statements stored different counts: {events}")
    median = {k: round(statistics.median(v)) for k, v in times.items()}
    return {
        "messages": len(sample),
        "events": events["before_015"],
        "batch": batch,
        "rounds": rounds,
        "db_ms_per_1000_messages": {k: [round(x) for x in v] for k, v in times.items()},
        "median_ms_per_1000_messages": median,
        "ratio_with_vs_before": round(median["with_seq_registry"] / median["before_015"], 2),
        "throughput_ratio": round(median["before_015"] / median["with_seq_registry"], 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (`cxp bench seq-cost`)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000, help="messages per write_batch (the gateway's batch)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(
        json.dumps(
            run(devices=args.devices, days=args.days, messages=args.messages, batch=args.batch, rounds=args.rounds),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

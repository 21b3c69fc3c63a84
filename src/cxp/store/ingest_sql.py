"""The SQL of telemetry writes: the gateway's check-expand-insert statement over JSON payloads, and its typed twin
over COPY rows for bulk imports (with an optimistic first try for batches of new events)."""

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    msg_no integer NOT NULL, device_key integer NOT NULL, received_at float8 NOT NULL,
    activated_at float8 NOT NULL, payload json NOT NULL
) ON COMMIT DELETE ROWS
"""

# Payloads passed strict contract validation, so every field parses here; expanding them in SQL
# keeps the per-event work off the gateway's Python thread. The contract's defaults are applied here
# (SQL_DEFAULTS below; tests/contract pins them to the models). A message whose events break a time
# bound, or reuse a device's seq with other content (`seq_conflict`), is rejected whole and reported back
# for dead-lettering in the same transaction.
#
# Seq identity (migration 015): `device_seq` holds one row per (device, seq) stored, with the stored event's
# content hash. An event whose (device, seq) is there with the same hash is a duplicate; with another hash, a
# conflict; within one batch, the first message holding a (device, seq) is the reference (identical repeats within
# the batch meet the unique indexes' ON CONFLICT DO NOTHING). Events whose (device, seq) was not known are stored
# and registered. `raced` counts (device, seq) that were neither registered here nor known before: another
# transaction stored them after this statement's snapshot, so the caller rolls back and retries.
CHECK_EXPAND_INSERT = """
WITH ev AS MATERIALIZED (
    SELECT s.msg_no, s.device_key, e.*,
           event_content_hash(e.kind, e.ts, e.touchpoint, e.success, e.duration_s, e.quantity, e.unit, e.latency_ms,
                              e.code, e.severity, e.nps, e.csat, e.ces, e.stage, e.detail, e.battery_pct,
                              e.signal_dbm, e.uptime_s, e.energy_wh, e.metrics) AS h
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
cand AS MATERIALIZED (
    SELECT ev.* FROM ev JOIN verdict v USING (msg_no) WHERE v.reason IS NULL
),
first_of AS MATERIALIZED (
    SELECT DISTINCT ON (device_key, seq) device_key, seq, msg_no, h FROM cand ORDER BY device_key, seq, msg_no
),
known AS MATERIALIZED (
    SELECT d.device_key, d.seq, d.ts, d.kind, d.content_hash
    FROM device_seq d JOIN first_of f USING (device_key, seq)
),
clash AS MATERIALIZED (
    SELECT c.msg_no, c.device_key, c.seq, k.ts AS stored_ts, k.kind AS stored_kind,
           CASE WHEN k.seq IS NULL THEN f.msg_no END AS first_msg
    FROM cand c JOIN first_of f USING (device_key, seq) LEFT JOIN known k USING (device_key, seq)
    WHERE c.h <> coalesce(k.content_hash, f.h)
),
good AS MATERIALIZED (
    SELECT c.* FROM cand c WHERE NOT EXISTS (SELECT 1 FROM clash x WHERE x.msg_no = c.msg_no)
),
fresh AS MATERIALIZED (
    SELECT g.* FROM good g
    WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.device_key = g.device_key AND k.seq = g.seq)
),
reg AS (
    INSERT INTO device_seq (device_key, seq, ts, kind, content_hash)
    SELECT device_key, seq, ts, kind, h FROM fresh ORDER BY device_key, seq, msg_no
    ON CONFLICT DO NOTHING
    RETURNING device_key, seq
),
new_events AS (
    INSERT INTO events (device_key, ts, seq, kind, touchpoint, success, duration_s, quantity, unit,
                        latency_ms, code, severity, nps, csat, ces, stage, detail)
    SELECT device_key, ts, seq, kind::event_kind, touchpoint,
           CASE WHEN kind = 'usage' THEN coalesce(success, true) END, duration_s, quantity, unit, latency_ms,
           code, CASE WHEN kind = 'error' THEN coalesce(severity, 'error') END, nps, csat, ces, stage,
           NULLIF(detail, '{}'::jsonb)
    FROM fresh WHERE kind <> 'state'
    ON CONFLICT DO NOTHING
    RETURNING device_key, ts
),
new_states AS (
    INSERT INTO device_state (device_key, ts, seq, battery_pct, signal_dbm, uptime_s, energy_wh, metrics)
    SELECT device_key, ts, seq, battery_pct, signal_dbm, uptime_s, energy_wh, NULLIF(metrics, '{}'::jsonb)
    FROM fresh WHERE kind = 'state'
    ON CONFLICT DO NOTHING
    RETURNING device_key, ts
),
dirty AS (
    INSERT INTO rollup_dirty (device_key, day)
    SELECT DISTINCT device_key, (ts AT TIME ZONE 'UTC')::date
    FROM (SELECT * FROM new_events UNION ALL SELECT * FROM new_states) AS n
),
seq_stats AS (
    INSERT INTO device_seq_stats AS t (device_key, min_seq, max_seq, seqs)
    SELECT device_key, min(seq), max(seq), count(*) FROM reg GROUP BY device_key ORDER BY device_key
    ON CONFLICT (device_key) DO UPDATE SET min_seq = least(t.min_seq, excluded.min_seq),
        max_seq = greatest(t.max_seq, excluded.max_seq), seqs = t.seqs + excluded.seqs, updated_at = now()
),
conflicts AS (
    SELECT msg_no, count(*) AS n,
           json_agg(json_build_object('seq', seq, 'stored', stored, 'new', new) ORDER BY seq)
               FILTER (WHERE rank <= 5) AS shown
    FROM (
        SELECT x.msg_no, x.seq, row_number() OVER (PARTITION BY x.msg_no ORDER BY x.seq) AS rank,
               (SELECT j FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                WHERE s.msg_no = x.msg_no AND (j ->> 'seq')::bigint = x.seq) AS new,
               CASE WHEN x.first_msg IS NOT NULL THEN
                        (SELECT json_build_object('in_this_batch', true, 'event', j)
                         FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                         WHERE s.msg_no = x.first_msg AND (j ->> 'seq')::bigint = x.seq)
                    ELSE coalesce(
                        CASE WHEN x.stored_kind = 'state' THEN
                                 (SELECT (jsonb_strip_nulls(to_jsonb(d) - 'device_key')
                                          || '{"kind": "state"}')::json
                                  FROM device_state d
                                  WHERE d.device_key = x.device_key AND d.ts = x.stored_ts AND d.seq = x.seq)
                             ELSE (SELECT (jsonb_strip_nulls(to_jsonb(e) - 'device_key'))::json FROM events e
                                   WHERE e.device_key = x.device_key AND e.ts = x.stored_ts AND e.seq = x.seq)
                        END,
                        json_build_object('seq', x.seq, 'ts', x.stored_ts, 'kind', x.stored_kind))
               END AS stored
        FROM clash x
    ) c
    GROUP BY msg_no
)
SELECT (SELECT count(*) FROM good), (SELECT count(*) FROM new_events), (SELECT count(*) FROM new_states),
       (SELECT coalesce(json_agg(json_build_array(msg_no, reason, CASE reason
            WHEN 'future_timestamp' THEN format('event at %%s is after receipt %%s + %%s s',
                                                 last_ts, received, %(skew)s)
            WHEN 'before_activation' THEN format('event at %%s precedes activation %%s', first_ts, activated)
            ELSE format('event at %%s is older than the retention horizon (%%s s)', first_ts, %(max_age)s)
            END)), '[]') FROM verdict WHERE reason IS NOT NULL),
       (SELECT coalesce(json_agg(json_build_array(msg_no, 'seq_conflict',
            json_build_object('conflicts', n, 'shown', shown)::text) ORDER BY msg_no), '[]') FROM conflicts),
       (SELECT count(*) FROM (SELECT DISTINCT device_key, seq FROM fresh) f
        WHERE NOT EXISTS (SELECT 1 FROM reg r WHERE r.device_key = f.device_key AND r.seq = f.seq))
"""

# The typed twin of the statement above for messages whose events arrive as rows (bulk imports): the same checks,
# registry and inserts, reading `ingest_rows` instead of expanding JSON, and showing a conflicting event from its row.
EVENT_COLUMNS = (
    "seq", "ts", "kind", "touchpoint", "success", "duration_s", "quantity", "unit", "latency_ms", "code", "severity",
    "nps", "csat", "ces", "stage", "detail", "battery_pct", "signal_dbm", "uptime_s", "energy_wh", "metrics",
)

TYPED_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_messages (
    msg_no integer NOT NULL, device_key integer NOT NULL, received_at float8 NOT NULL, activated_at float8 NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_rows (
    msg_no integer NOT NULL, device_key integer NOT NULL, seq bigint, ts timestamptz, kind text, touchpoint text,
    success boolean, duration_s real, quantity double precision, unit text, latency_ms real, code text,
    severity text, nps smallint, csat smallint, ces smallint, stage text, detail jsonb, battery_pct real,
    signal_dbm real, uptime_s double precision, energy_wh double precision, metrics jsonb
) ON COMMIT DELETE ROWS
"""

_JSON_EV = CHECK_EXPAND_INSERT[
    CHECK_EXPAND_INSERT.index("    SELECT s.msg_no") : CHECK_EXPAND_INSERT.index("),\nverdict")
]
_TYPED_EV = """    SELECT r.*,
           event_content_hash(r.kind, r.ts, r.touchpoint, r.success, r.duration_s, r.quantity, r.unit, r.latency_ms,
                              r.code, r.severity, r.nps, r.csat, r.ces, r.stage, r.detail, r.battery_pct,
                              r.signal_dbm, r.uptime_s, r.energy_wh, r.metrics) AS h
    FROM ingest_rows r
"""
_JSON_NEW = """(SELECT j FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                WHERE s.msg_no = x.msg_no AND (j ->> 'seq')::bigint = x.seq)"""
_JSON_FIRST = """(SELECT json_build_object('in_this_batch', true, 'event', j)
                         FROM ingest_staging s, json_array_elements(s.payload -> 'events') j
                         WHERE s.msg_no = x.first_msg AND (j ->> 'seq')::bigint = x.seq)"""
_ROW_JSON = "jsonb_strip_nulls(to_jsonb(r) - 'msg_no' - 'device_key')::json"
TYPED_CHECK_INSERT = (
    CHECK_EXPAND_INSERT.replace(_JSON_EV, _TYPED_EV)
    .replace(_JSON_NEW, f"(SELECT {_ROW_JSON} FROM ingest_rows r WHERE r.msg_no = x.msg_no AND r.seq = x.seq LIMIT 1)")
    .replace(_JSON_FIRST, f"(SELECT json_build_object('in_this_batch', true, 'event', {_ROW_JSON}) FROM ingest_rows r"
                          " WHERE r.msg_no = x.first_msg AND r.seq = x.seq LIMIT 1)")
    .replace("FROM ingest_staging s\n    JOIN (SELECT msg_no", "FROM ingest_messages s\n    JOIN (SELECT msg_no")
)
assert "ingest_staging" not in TYPED_CHECK_INSERT and "json_to_recordset" not in TYPED_CHECK_INSERT

# The typed path's first try, for the usual bulk case where no event of the batch is stored yet and no seq repeats
# with other content: register every (device, seq) and insert the events, all as plain inserts (a unique index probe
# per row instead of a lookup, a join and two anti-joins, and no speculative insertion: ~2–4 µs a row less). A known
# (device, seq), or a stored event the registry does not know, raises a unique violation; a seq repeated within the
# batch with other content makes `fine` false: either way the caller rolls back to before it and runs
# TYPED_CHECK_INSERT.
def _between(text: str, start: str, end: str) -> str:
    """The part of `text` from `start` up to (not including) `end`; both must be there."""
    i = text.index(start)
    return text[i : text.index(end, i)]


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# Shared with the exact statements: the time-bound verdict, the inserts (fed by `uniq` when `ok`, in time order so
# the rows of one day's chunk go together, without ON CONFLICT as said above) and the out-of-bounds report.
_FRESH_VERDICT = _between(TYPED_CHECK_INSERT, "verdict AS MATERIALIZED (", "first_of AS MATERIALIZED (")
_FRESH_INSERTS = _swap(
    _swap(
        _between(CHECK_EXPAND_INSERT, "new_events AS (", "seq_stats AS ("),
        "FROM fresh WHERE kind <> 'state'\n    ON CONFLICT DO NOTHING",
        "FROM uniq WHERE kind <> 'state' AND (SELECT fine FROM ok) ORDER BY ts",
    ),
    "FROM fresh WHERE kind = 'state'\n    ON CONFLICT DO NOTHING",
    "FROM uniq WHERE kind = 'state' AND (SELECT fine FROM ok) ORDER BY ts",
)
_OUT_OF_BOUNDS = _between(
    CHECK_EXPAND_INSERT, "(SELECT coalesce(json_agg(json_build_array(msg_no, reason,", ",\n       (SELECT coalesce("
)

TYPED_FRESH_INSERT = f"""
WITH ev AS MATERIALIZED (
{_TYPED_EV}),
{_FRESH_VERDICT}uniq AS MATERIALIZED (
    SELECT DISTINCT ON (device_key, seq) * FROM cand ORDER BY device_key, seq, msg_no
),
reg AS (
    INSERT INTO device_seq (device_key, seq, ts, kind, content_hash)
    SELECT device_key, seq, ts, kind, h FROM uniq ORDER BY device_key, seq
),
ok AS MATERIALIZED (
    SELECT NOT EXISTS (SELECT 1 FROM cand c JOIN uniq u USING (device_key, seq) WHERE c.h <> u.h) AS fine
),
{_FRESH_INSERTS}seq_stats AS (
    INSERT INTO device_seq_stats AS t (device_key, min_seq, max_seq, seqs)
    SELECT device_key, min(seq), max(seq), count(*) FROM uniq WHERE (SELECT fine FROM ok)
    GROUP BY device_key ORDER BY device_key
    ON CONFLICT (device_key) DO UPDATE SET min_seq = least(t.min_seq, excluded.min_seq),
        max_seq = greatest(t.max_seq, excluded.max_seq), seqs = t.seqs + excluded.seqs, updated_at = now()
)
SELECT (SELECT fine FROM ok), (SELECT count(*) FROM cand), (SELECT count(*) FROM new_events),
       (SELECT count(*) FROM new_states),
       {_OUT_OF_BOUNDS}
"""

"""The SQL behind each rule type: bounded by time windows and watermarks, never a rescan of history."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import psycopg

from cxp.alerts.core.conditions import Verdict, touchpoint_verdict
from cxp.alerts.core.rules import PipelineParams, Rule, Scope, SilenceParams, TouchpointParams

# Late data: events up to this much older than the last evaluation still move a device's last-seen time.
SEEN_MARGIN = timedelta(minutes=10)
# First evaluation on a database: look this far back for each device's last-seen time.
SEEN_FIRST_LOOKBACK = timedelta(days=7)


def _scope_sql(scope: Scope, *, touchpoint_col: str | None = None) -> tuple[str, dict]:
    """AND-ed conditions on `d` (devices) for a rule's scope, with their parameters."""
    clauses, params = ["true"], {}
    for field in ("product_id", "account_id", "device_id"):
        value = getattr(scope, field)
        if value is not None:
            clauses.append(f"d.{field} = %(s_{field})s")
            params[f"s_{field}"] = value
    if scope.segment is not None:
        clauses.append("d.account_id IN (SELECT account_id FROM accounts WHERE segment = %(s_segment)s)")
        params["s_segment"] = scope.segment
    if scope.touchpoint is not None and touchpoint_col:
        clauses.append(f"{touchpoint_col} = %(s_touchpoint)s")
        params["s_touchpoint"] = scope.touchpoint
    return " AND ".join(clauses), params


def advance_device_seen(conn: psycopg.Connection, *, now: datetime) -> int:
    """Move each device's last-seen time forward from rows newer than the previous watermark; return rows."""
    row = conn.execute("SELECT watermark FROM alert_eval_state WHERE key = 'device_seen'").fetchone()
    since = (row[0] - SEEN_MARGIN) if row else now - SEEN_FIRST_LOOKBACK
    since = min(since, now - SEEN_MARGIN)
    n = conn.execute(
        "INSERT INTO alert_device_seen (device_key, last_seen)"
        " SELECT device_key, max(ts) FROM ("
        "   SELECT device_key, ts FROM events WHERE ts > %(since)s"
        "   UNION ALL SELECT device_key, ts FROM device_state WHERE ts > %(since)s) x GROUP BY 1"
        " ON CONFLICT (device_key) DO UPDATE SET last_seen = greatest(alert_device_seen.last_seen, EXCLUDED.last_seen)",
        {"since": since},
    ).rowcount
    conn.execute(
        "INSERT INTO alert_eval_state (key, watermark) VALUES ('device_seen', %s)"
        " ON CONFLICT (key) DO UPDATE SET"
        " watermark = greatest(alert_eval_state.watermark, EXCLUDED.watermark)",
        (now,),
    )
    return n


def silence(
    conn: psycopg.Connection, rule: Rule, p: SilenceParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """Devices not heard from (never: since activation) for k × their product's heartbeat interval; with
    `min_share`, the products with at least that share of their devices in scope silent.

    With `cache`, the pass reads once the devices silent for the smallest k of its silence rules
    (`cache["silence_k"]`) and each rule filters them by its own k and scope.
    """
    k_min = cache.get("silence_k", p.k) if cache is not None else p.k
    if cache is None or "silent" not in cache:
        rows = conn.execute(
            "SELECT d.device_id, d.product_id, d.account_id, a.segment, coalesce(s.last_seen, d.activated_at),"
            " p.heartbeat_interval_s FROM devices d JOIN products p USING (product_id)"
            " LEFT JOIN accounts a USING (account_id) LEFT JOIN alert_device_seen s USING (device_key)"
            " WHERE d.activated_at <= %(now)s AND coalesce(s.last_seen, d.activated_at)"
            "   < %(now)s - make_interval(secs => p.heartbeat_interval_s * %(k)s)",
            {"now": now, "k": min(k_min, p.k)},
        ).fetchall()
        if cache is None:
            return _silent(rows, rule, p, now) if p.min_share is None else _silent_share(conn, rows, rule, p, now, {})
        cache["silent"] = rows
    if p.min_share is not None:
        return _silent_share(conn, cache["silent"], rule, p, now, cache)
    return _silent(cache["silent"], rule, p, now)


def _in_scope(s: Scope, *, device: str, product: str, account: str | None, segment: str | None) -> bool:
    return (
        (s.product_id is None or s.product_id == product)
        and (s.account_id is None or s.account_id == account)
        and (s.device_id is None or s.device_id == device)
        and (s.segment is None or s.segment == segment)
    )


def _silent(rows: list[tuple], rule: Rule, p: SilenceParams, now: datetime) -> dict[str, Verdict]:
    out = {}
    for device, product, account, segment, seen, interval in rows:
        if (
            _in_scope(rule.scope, device=device, product=product, account=account, segment=segment)
            and (now - seen).total_seconds() > interval * p.k
        ):
            out[device] = Verdict(
                True,
                {
                    "last_seen": seen.isoformat(),
                    "silent_s": round((now - seen).total_seconds()),
                    "limit_s": interval * p.k,
                },
            )
    return out


def _silent_share(
    conn: psycopg.Connection, rows: list[tuple], rule: Rule, p: SilenceParams, now: datetime, cache: dict
) -> dict[str, Verdict]:
    """Products whose silent devices in scope are at least `min_share` of their activated devices in scope."""
    silent: dict[str, int] = {}
    for device, product, account, segment, seen, interval in rows:
        if (
            _in_scope(rule.scope, device=device, product=product, account=account, segment=segment)
            and (now - seen).total_seconds() > interval * p.k
        ):
            silent[product] = silent.get(product, 0) + 1
    if not silent:
        return {}
    where, params = _scope_sql(rule.scope)
    key = ("fleet_size", where, tuple(sorted(params.items())))
    if key not in cache:  # devices per product in scope: one small aggregate per scope and pass
        cache[key] = dict(
            conn.execute(
                f"SELECT d.product_id, count(*) FROM devices d WHERE {where} AND d.activated_at <= %(now)s GROUP BY 1",
                params | {"now": now},
            ).fetchall()
        )
    out = {}
    for product, n in silent.items():
        total = cache[key].get(product, 0)
        if total and n >= p.min_devices and n / total >= p.min_share:
            out[product] = Verdict(
                True,
                {
                    "silent_devices": n,
                    "devices": total,
                    "share": round(n / total, 4),
                    "min_share": p.min_share,
                    "k": p.k,
                },
                product_id=product,
            )
    return out


def touchpoint(
    conn: psycopg.Connection, rule: Rule, p: TouchpointParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """Per product × touchpoint: the last `window_h` hourly buckets against thresholds and the baseline before.

    Rules scoped by product / touchpoint only (the usual case) share one scan per pass: the pass's hourly
    sums per product × touchpoint (`cache`); account, segment and device scopes query for themselves.
    """
    hour = now.replace(minute=0, second=0, microsecond=0)
    window_start = hour - timedelta(hours=p.window_h - 1)
    start = window_start - timedelta(hours=p.baseline_h)
    s = rule.scope
    if cache is not None and s.account_id is None and s.segment is None and s.device_id is None:
        hours = _shared_hours(conn, cache, now=now, start=start)
        rows = []
        for (product, tp), buckets in hours.items():
            if (s.product_id is None or s.product_id == product) and (s.touchpoint is None or s.touchpoint == tp):
                win = [b for b in buckets if b[0] >= window_start]
                base = [b for b in buckets if start <= b[0] < window_start]
                rows.append(
                    (
                        product,
                        tp,
                        sum(b[1] for b in win),
                        sum(b[2] for b in win),
                        sum(b[3] for b in win),
                        sum(b[4] for b in win),
                        sum(b[1] for b in base),
                        sum(b[2] for b in base),
                    )
                )
    else:
        rows = _scoped_sums(conn, rule, now=now, window_start=window_start, start=start)
    out = {}
    for product, tp, n, ok, lat_n, lat_sum, base_n, base_ok in rows:
        verdict = touchpoint_verdict(
            p, n=n, successes=ok, latency_n=lat_n, latency_sum=lat_sum, base_n=base_n, base_successes=base_ok
        )
        if verdict.firing:
            out[f"{product}/{tp}"] = replace(verdict, product_id=product, touchpoint=tp)
    return out


def _shared_hours(conn: psycopg.Connection, cache: dict, *, now: datetime, start: datetime) -> dict:
    """Hourly sums per product × touchpoint since the pass's earliest start (read once per pass)."""
    since = cache.get("tp_since", start)
    if "tp_hours" not in cache or start < since:
        rows = conn.execute(
            "SELECT d.product_id, r.touchpoint, r.bucket, sum(r.usage_count)::int, sum(r.success_count)::int,"
            " sum(r.latency_count)::int, sum(r.latency_sum)"
            " FROM rollup_hourly r JOIN devices d USING (device_key)"
            " WHERE r.touchpoint <> '' AND r.bucket >= %s AND r.bucket <= %s GROUP BY 1, 2, 3",
            (min(start, since), now),
        ).fetchall()
        hours: dict = {}
        for product, tp, bucket, n, ok, lat_n, lat_sum in rows:
            hours.setdefault((product, tp), []).append((bucket, n, ok, lat_n, lat_sum))
        cache["tp_hours"], cache["tp_since"] = hours, min(start, since)
    return cache["tp_hours"]


def _scoped_sums(
    conn: psycopg.Connection, rule: Rule, *, now: datetime, window_start: datetime, start: datetime
) -> list[tuple]:
    where, params = _scope_sql(rule.scope, touchpoint_col="r.touchpoint")
    return conn.execute(
        "SELECT d.product_id, r.touchpoint,"
        " coalesce(sum(r.usage_count) FILTER (WHERE r.bucket >= %(w)s), 0)::int,"
        " coalesce(sum(r.success_count) FILTER (WHERE r.bucket >= %(w)s), 0)::int,"
        " coalesce(sum(r.latency_count) FILTER (WHERE r.bucket >= %(w)s), 0)::int,"
        " coalesce(sum(r.latency_sum) FILTER (WHERE r.bucket >= %(w)s), 0),"
        " coalesce(sum(r.usage_count) FILTER (WHERE r.bucket < %(w)s), 0)::int,"
        " coalesce(sum(r.success_count) FILTER (WHERE r.bucket < %(w)s), 0)::int"
        " FROM rollup_hourly r JOIN devices d USING (device_key)"
        f" WHERE {where} AND r.touchpoint <> '' AND r.bucket >= %(start)s AND r.bucket <= %(now)s"
        " GROUP BY 1, 2",
        params | {"w": window_start, "start": start, "now": now},
    ).fetchall()


def pipeline(
    conn: psycopg.Connection, rule: Rule, p: PipelineParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """Dead letters received in the window, the rollup backlog (dirty device-days), each gateway's p99 receive →
    commit latency, or the seconds since each gateway's last stats report, over the limit."""
    limits = {"max_value": p.max_value, "window_s": p.window_s}
    if p.metric in ("ingest_lag_ms", "gateway_silent_s"):
        out = {}
        for gateway, at, lag in _gateways(conn, now=now, cache=cache if cache is not None else {}):
            silent_s = (now - at).total_seconds()
            if p.metric == "gateway_silent_s":
                if silent_s > p.max_value:
                    out[gateway] = Verdict(True, {"value": round(silent_s), "last_report": at.isoformat(), **limits})
            elif silent_s <= p.window_s and lag is not None and lag > p.max_value:
                out[gateway] = Verdict(True, {"value": lag, "last_report": at.isoformat(), **limits})
        return out
    if p.metric == "dead_letters":
        value = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE received_at > %s AND received_at <= %s",
            (now - timedelta(seconds=p.window_s), now),
        ).fetchone()[0]
    else:
        value = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0]
    if value > p.max_value:
        return {p.metric: Verdict(True, {"value": value, **limits})}
    return {}


def _gateways(conn: psycopg.Connection, *, now: datetime, cache: dict) -> list[tuple]:
    """Each gateway's latest stats report up to `now` (the table keeps a day): id, time, p99 receive → commit ms."""
    if "gateways" not in cache:
        cache["gateways"] = conn.execute(
            "SELECT DISTINCT ON (gateway_id) gateway_id, at, (snapshot->>'receive_to_commit_ms_p99')::float8"
            " FROM gateway_stats WHERE at <= %s ORDER BY gateway_id, at DESC",
            (now,),
        ).fetchall()
    return cache["gateways"]


def smallest_k(rules: list[Rule]) -> float:
    """The smallest silence multiple of the pass: its shared read covers every silence rule."""
    return min((r.params.k for r in rules if isinstance(r.params, SilenceParams)), default=1.0)


def earliest_start(rules: list[Rule], now: datetime) -> datetime:
    """The oldest hourly bucket any touchpoint rule of the pass reads (window + baseline)."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    spans = [r.params.window_h - 1 + r.params.baseline_h for r in rules if isinstance(r.params, TouchpointParams)]
    return hour - timedelta(hours=max(spans, default=0))


CONDITIONS = {"silence": silence, "touchpoint": touchpoint, "pipeline": pipeline}

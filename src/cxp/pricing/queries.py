"""SQL of the pricing lab: billable metrics per (account or device) × calendar month, aggregated in the database.

Every query is a `psycopg.sql.Composed` plus a parameter dict: values travel as parameters,
names (columns, the grouping key) as `sql.Identifier`. Months are UTC calendar months
(`time_bucket('1 month', …)` on dates, whose origin 2000-01-01 is a month start).

Where each aggregation reads (rollups where they suffice, raw hypertables only otherwise):

* usage count / sum of quantity or duration_s: `rollup_monthly` without a touchpoint filter,
  `rollup_touchpoint_monthly` with one (success-only counts use `success_count`); heartbeat-covered hours and the
  activity of the experience-health proxy: `rollup_monthly` (per device × UTC month, the sums of its days).
* unique devices / days / touchpoints of usage: `rollup_touchpoint_daily` (a device × touchpoint × day with usage).
* usage sum with success_only, sums of latency_ms (the rollups mix in error latencies), max and
  latest of a usage field: raw `events`.
* state count, unique devices / days with heartbeats, max energy_wh: `rollup_daily`.
* other state sums and maxima, latest, time-weighted sums: raw `device_state`.

`latest` and `time_weighted_sum` are per device first (the last value in the month; ∫ value dt),
then summed over an account's devices; `max` is the maximum over its devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from psycopg import sql

from cxp.pricing.core.plans import USAGE_FIELDS, Aggregation, BillableMetric, MetricSource
from cxp.pricing.errors import PricingError
from cxp.store.rollups import UPTIME_HOLD_FACTOR

Level = Literal["account", "device"]

# Devices in scope with their grouping key. `accounts`/`product`/`segment` NULL = no filter.
_SCOPE = """
dev AS MATERIALIZED (
    SELECT d.device_key, d.device_id, d.account_id, d.activated_at, p.heartbeat_interval_s
    FROM devices d
    JOIN products p ON p.product_id = d.product_id
    LEFT JOIN accounts a ON a.account_id = d.account_id
    WHERE d.account_id IS NOT NULL
      AND (%(product)s::text IS NULL OR d.product_id = %(product)s::text)
      AND (%(segment)s::text IS NULL OR a.segment = %(segment)s::text)
      AND (%(accounts)s::text[] IS NULL OR d.account_id = ANY(%(accounts)s::text[]))
)"""

_WINDOW_START = "(%(start)s::date::timestamp AT TIME ZONE 'UTC')"
_WINDOW_END = "(%(end)s::date::timestamp AT TIME ZONE 'UTC')"


def _t(text: str) -> str:
    """`text` with {S} / {E} replaced by the window's start / end instants (other placeholders kept)."""
    return text.replace("{S}", _WINDOW_START).replace("{E}", _WINDOW_END)


_MONTH_TS = "(time_bucket('1 month', ({col} AT TIME ZONE 'UTC')::date))"
_MONTH_DATE = "time_bucket('1 month', {col})"

# How long a state sample holds at most, in multiples of the product's heartbeat interval: the
# same 1.5× tolerance that makes a device "up" (domain notes), so a silent device accrues nothing. The store keeps
# each device-day's heartbeat cover with it (uptime_daily).
HOLD_FACTOR = UPTIME_HOLD_FACTOR


def scope_params(
    *,
    start: date,
    end: date,
    product: str | None,
    segment: str | None,
    accounts: list[str] | None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The parameters every pricing query takes: window [start, end) in UTC days, cohort filters, data horizon.

    `until` (tz-aware) is where recorded data ends (default: the window end); exposure (device-days,
    device-hours) is counted up to it so a fleet recorded to mid-month is not read as half down.
    """
    if until is None:
        until = datetime.combine(end, time(0), tzinfo=UTC)
    if until.tzinfo is None:
        raise PricingError("until must be timezone-aware")
    return {"start": start, "end": end, "product": product, "segment": segment, "accounts": accounts, "until": until}


def _key(level: Level) -> sql.Identifier:
    if level not in ("account", "device"):
        raise PricingError(f"level must be 'account' or 'device', got {level!r}")
    return sql.Identifier("account_id" if level == "account" else "device_id")


# `real` columns read from raw rows go through their shortest decimal text, so 40220.1 stays 40220.1
# instead of float4's binary 40220.1015625 (float4 → numeric would keep only 6 digits).
_REAL_AS_DECIMAL = {f: "::text::float8" for f in ("duration_s", "latency_ms", "battery_pct", "signal_dbm")}


def _tp_filter(metric: BillableMetric, alias: str) -> sql.Composable:
    if not metric.filter.touchpoints:
        return sql.SQL("")
    return sql.SQL(" AND {}.touchpoint = ANY(%(touchpoints)s::text[])").format(sql.Identifier(alias))


def _state_value(field: str) -> sql.Composable:
    if field.startswith("metrics."):
        # A non-numeric value in the metrics document is no number, not an error.
        return sql.SQL(
            "CASE WHEN jsonb_typeof(st.metrics -> %(metric_key)s) = 'number' "
            "THEN (st.metrics ->> %(metric_key)s)::float8 END"
        )
    return sql.SQL("st.{}" + _REAL_AS_DECIMAL.get(field, "::float8")).format(sql.Identifier(field))


def _scaled(value: str) -> str:
    """SQL of `value` rounded to %(decimals)s decimals as an integer count of 10^-decimals (exact; bigint)."""
    return f"(round(({value})::numeric, %(decimals)s::int) * power(10::numeric, %(decimals)s::int))::bigint"


def rollup_usage_column(metric: BillableMetric) -> tuple[str, str] | None:
    """(table, column) of the monthly rollup that answers a usage count or sum of quantity / duration_s (successes
    only for counts; `rollup_touchpoint_monthly` with a touchpoint filter, else `rollup_monthly`), or None."""
    agg, fld, flt = metric.aggregation, metric.field, metric.filter
    if metric.source is not MetricSource.USAGE or not (
        agg is Aggregation.COUNT
        or (agg is Aggregation.SUM and fld in ("quantity", "duration_s") and not flt.success_only)
    ):
        return None
    column = {None: "success_count" if flt.success_only else "usage_count", "quantity": "quantity_sum",
              "duration_s": "duration_sum"}[fld]
    return ("rollup_touchpoint_monthly" if flt.touchpoints else "rollup_monthly"), column


def rollup_metrics_query(
    *, metrics: Sequence[BillableMetric], level: Level, decimals: int
) -> tuple[sql.Composed, dict[str, Any]]:
    """SQL giving (key, month, v_0 … v_n) rows for usage metrics one monthly rollup answers (`rollup_usage_column`,
    the same table for all), in one scan: each value as `metric_query` computes it alone, NULL where absent (billing
    periods are whole UTC months: the device-months' sums are those of their days)."""
    answered = [a for a in (rollup_usage_column(m) for m in metrics) if a is not None]
    tables = {table for table, _ in answered}
    if len(answered) != len(metrics) or len(tables) != 1:
        raise PricingError("rollup_metrics_query takes usage metrics of one monthly rollup table")
    # rows of no metric's touchpoints are left out (every metric of rollup_touchpoint_daily filters touchpoints)
    touchpoints = sorted({t for m in metrics for t in m.filter.touchpoints})
    params: dict[str, Any] = {"decimals": decimals, "touchpoints": touchpoints}
    inner_values, outer_values = [], []
    for i, (metric, (_, column)) in enumerate(zip(metrics, answered, strict=True)):
        only = sql.SQL("")
        if metric.filter.touchpoints:
            params[f"touchpoints_{i}"] = list(metric.filter.touchpoints)
            only = sql.SQL(" FILTER (WHERE r.touchpoint = ANY({}::text[]))").format(sql.Placeholder(f"touchpoints_{i}"))
        name = sql.Identifier(f"v_{i}")
        inner_values.append(sql.SQL("sum(r.{}){}::float8 AS {}").format(sql.Identifier(column), only, name))
        outer_values.append(sql.SQL(_scaled("sum(pd.{})")).format(name))
    q = sql.SQL(
        "WITH {scope}, per_device AS ("
        "SELECT r.device_key, r.month, {inner} FROM {table} r JOIN dev ON dev.device_key = r.device_key "
        "WHERE r.month >= %(start)s::date AND r.month < %(end)s::date{only} GROUP BY 1, 2) "
        "SELECT dev.{key}, pd.month, {outer} FROM per_device pd JOIN dev ON dev.device_key = pd.device_key "
        "GROUP BY 1, 2"
    ).format(
        scope=sql.SQL(_SCOPE), inner=sql.SQL(", ").join(inner_values),
        table=sql.Identifier(tables.pop()), key=_key(level), outer=sql.SQL(", ").join(outer_values),
        only=sql.SQL(" AND r.touchpoint = ANY(%(touchpoints)s::text[])") if touchpoints else sql.SQL(""),
    )
    return q, params


def metric_query(*, metric: BillableMetric, level: Level, decimals: int) -> tuple[sql.Composed, dict[str, Any]]:
    """SQL giving (key, month, value) rows of `metric` per `level` key and UTC month; value rounded to `decimals`
    decimals, as an integer count of 10^-decimals.

    Rows with no data are absent (the caller fills zeros). Takes `scope_params(...)` plus the returned params.
    """
    key = _key(level)
    params: dict[str, Any] = {"decimals": decimals, "touchpoints": list(metric.filter.touchpoints) or None}
    if metric.field and metric.field.startswith("metrics."):
        params["metric_key"] = metric.field.removeprefix("metrics.")
    agg, src, fld, flt = metric.aggregation, metric.source, metric.field, metric.filter
    inner: sql.Composable
    outer = "sum"
    month_daily = sql.SQL(_MONTH_DATE.format(col="r.day"))
    month_ev = sql.SQL(_MONTH_TS.format(col="e.ts"))
    month_st = sql.SQL(_MONTH_TS.format(col="st.ts"))
    window_daily = sql.SQL("r.day >= %(start)s::date AND r.day < %(end)s::date")
    window_ev = sql.SQL(_t("{a}.ts >= {S} AND {a}.ts < {E}"))

    if rollup_usage_column(metric) is not None:
        return rollup_metrics_query(metrics=[metric], level=level, decimals=decimals)
    if src is MetricSource.USAGE:
        count_col = "success_count" if flt.success_only else "usage_count"
        if agg is Aggregation.UNIQUE_COUNT:
            if fld == "device":
                what = sql.SQL("count(DISTINCT r.device_key)")
            elif fld == "day":
                what = sql.SQL("count(DISTINCT r.day)")
            else:
                what = sql.SQL("count(DISTINCT r.touchpoint)")
            q = sql.SQL(
                "WITH {scope} SELECT dev.{key}, {month}, " + _scaled("{what}") + " "
                "FROM rollup_touchpoint_daily r JOIN dev ON dev.device_key = r.device_key "
                "WHERE {window} AND r.{col} > 0 AND r.touchpoint <> ''{tp} GROUP BY 1, 2"
            ).format(
                scope=sql.SQL(_SCOPE),
                key=key,
                month=month_daily,
                what=what,
                window=window_daily,
                col=sql.Identifier(count_col),
                tp=_tp_filter(metric, "r"),
            )
            return q, params
        if fld not in USAGE_FIELDS:  # pragma: no cover - BillableMetric validates fields
            raise PricingError(f"unknown usage field {fld!r}")
        value = sql.SQL("e.{}" + _REAL_AS_DECIMAL.get(fld, "::float8")).format(sql.Identifier(fld))
        ok = sql.SQL(" AND e.success") if flt.success_only else sql.SQL("")
        if agg is Aggregation.SUM:
            what = sql.SQL("sum({v})").format(v=value)
        elif agg is Aggregation.MAX:
            what, outer = sql.SQL("max({v})").format(v=value), "max"
        elif agg is Aggregation.LATEST:
            what = sql.SQL("last({v}, e.ts)").format(v=value)
        else:  # pragma: no cover - time_weighted_sum of usage is rejected by BillableMetric
            raise PricingError(f"{agg.value} is not defined on usage events")
        inner = sql.SQL(
            "SELECT e.device_key, {month} AS month, {what} AS v "
            "FROM events e JOIN dev ON dev.device_key = e.device_key "
            "WHERE e.kind = 'usage' AND {window}{ok}{tp} AND {v} IS NOT NULL GROUP BY 1, 2"
        ).format(
            month=month_ev,
            what=what,
            window=window_ev.format(a=sql.Identifier("e")),
            ok=ok,
            tp=_tp_filter(metric, "e"),
            v=value,
        )
    else:
        if agg is Aggregation.COUNT or agg is Aggregation.UNIQUE_COUNT:
            if agg is Aggregation.UNIQUE_COUNT:
                what = sql.SQL("count(DISTINCT r.device_key)" if fld == "device" else "count(DISTINCT r.day)")
                q = sql.SQL(
                    "WITH {scope} SELECT dev.{key}, {month}, " + _scaled("{what}") + " "
                    "FROM rollup_daily r JOIN dev ON dev.device_key = r.device_key "
                    "WHERE {window} AND r.heartbeat_count > 0 GROUP BY 1, 2"
                ).format(scope=sql.SQL(_SCOPE), key=key, month=month_daily, what=what, window=window_daily)
                return q, params
            inner = sql.SQL(
                "SELECT r.device_key, {month} AS month, sum(r.heartbeat_count)::float8 AS v "
                "FROM rollup_daily r JOIN dev ON dev.device_key = r.device_key WHERE {window} GROUP BY 1, 2"
            ).format(month=month_daily, window=window_daily)
        elif agg is Aggregation.MAX and fld == "energy_wh":
            outer = "max"
            inner = sql.SQL(
                "SELECT r.device_key, {month} AS month, max(r.energy_wh_max) AS v "
                "FROM rollup_daily r JOIN dev ON dev.device_key = r.device_key "
                "WHERE {window} AND r.energy_wh_max IS NOT NULL GROUP BY 1, 2"
            ).format(month=month_daily, window=window_daily)
        elif agg is Aggregation.TIME_WEIGHTED_SUM:
            inner = sql.SQL(_TIME_WEIGHTED).format(value=_state_value(fld or ""))
            params["hold"] = HOLD_FACTOR
        else:
            value = _state_value(fld or "")
            if agg is Aggregation.SUM:
                what = sql.SQL("sum({v})").format(v=value)
            elif agg is Aggregation.MAX:
                what, outer = sql.SQL("max({v})").format(v=value), "max"
            else:
                what = sql.SQL("last({v}, st.ts)").format(v=value)
            inner = sql.SQL(
                "SELECT st.device_key, {month} AS month, {what} AS v "
                "FROM device_state st JOIN dev ON dev.device_key = st.device_key "
                "WHERE {window} AND {v} IS NOT NULL GROUP BY 1, 2"
            ).format(month=month_st, what=what, window=window_ev.format(a=sql.Identifier("st")), v=value)
    q = sql.SQL(
        "WITH {scope}, per_device AS ({inner}) "
        "SELECT dev.{key}, pd.month, " + _scaled("{outer}(pd.v)") + " "
        "FROM per_device pd JOIN dev ON dev.device_key = pd.device_key GROUP BY 1, 2"
    ).format(scope=sql.SQL(_SCOPE), inner=inner, key=key, outer=sql.SQL(outer))
    return q, params


# ∫ value dt in hours per device and month. A sample holds until the next one, at most HOLD_FACTOR ×
# the product's heartbeat interval; samples shortly before the window carry in; each holding interval
# is clipped to the window and split at month boundaries. A hold is far shorter than a month, so it touches at
# most two months: its first month's piece, and the rest from the next month's start for the few that cross one
# (arithmetic per row instead of a set-returning subquery per row: the cost was in that subquery).
_TIME_WEIGHTED = _t("""
WITH held AS (
    SELECT device_key, make_interval(secs => heartbeat_interval_s * %(hold)s) AS hold FROM dev
), s AS (
    SELECT st.device_key, st.ts, v, least(lead(st.ts) OVER (PARTITION BY st.device_key ORDER BY st.ts),
                                          st.ts + held.hold) AS t_end
    FROM device_state st
    JOIN held ON held.device_key = st.device_key
    CROSS JOIN LATERAL (SELECT {value} AS v) x
    WHERE x.v IS NOT NULL AND st.ts >= {S} - held.hold AND st.ts < {E}
), clipped AS (
    SELECT device_key, v, a, b, month, (month + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS next_start
    FROM (SELECT device_key, v, greatest(ts, {S}) AS a, least(t_end, {E}) AS b,
                 time_bucket('1 month', (greatest(ts, {S}) AT TIME ZONE 'UTC')::date) AS month
          FROM s) c
    WHERE b > a
), pieces AS (
    SELECT device_key, v, month, a, least(b, next_start) AS b FROM clipped
    UNION ALL
    SELECT device_key, v, (month + interval '1 month')::date, next_start, b FROM clipped WHERE b > next_start
)
SELECT device_key, month, sum(v * date_part('epoch', b - a) / 3600.0) AS v
FROM pieces GROUP BY 1, 2
""")


# The window's months as dates (timestamp without time zone, so the session time zone plays no part).
_MONTHS = (
    "SELECT generate_series(%(start)s::date::timestamp, (%(end)s::date - 1)::timestamp, interval '1 month')::date"
    " AS month"
)


# A device's exposure in a month of `months m`: from its activation (or the month start) to the month end or the data
# horizon `until`, in hours, and in days (the days holding part of that time)
_EXPOSED_HOURS = (
    "extract(epoch FROM least((m.month + interval '1 month')::timestamp AT TIME ZONE 'UTC', %(until)s::timestamptz)"
    " - greatest(m.month::timestamp AT TIME ZONE 'UTC', dev.activated_at))::float8 / 3600.0"
)
_EXPOSED_DAYS = (
    "greatest(0, least((m.month + interval '1 month')::date, ((%(until)s::timestamptz - interval '1 microsecond')"
    " AT TIME ZONE 'UTC')::date + 1) - greatest(m.month, (dev.activated_at AT TIME ZONE 'UTC')::date))"
)


# Heartbeat-covered hours per device and month from the device-months the rollup refresh keeps (exact µs).
_COVERED = _t("""
SELECT u.device_key, u.month, u.covered_us::numeric / 3600000000 AS v
FROM rollup_monthly u JOIN dev ON dev.device_key = u.device_key
WHERE u.month >= %(start)s::date AND u.month < %(end)s::date
""")


def uptime_query(*, level: Level, source: Literal["rollups", "raw"] = "rollups") -> tuple[sql.Composed, dict[str, Any]]:
    """SQL giving (key, month, up, window): heartbeat-covered and exposed device-hours since activation, in 10^-6 h.

    `source="rollups"` reads the covers kept per device-day; "raw" integrates every heartbeat of the window (the
    reference they are tested and benchmarked against)."""
    key = _key(level)
    covered = (sql.SQL(_COVERED) if source == "rollups"
               else sql.SQL(_TIME_WEIGHTED).format(value=sql.SQL("1.0::float8")))
    q = sql.SQL(
        "WITH {scope}, per_device AS ({tw}), "
        "months AS (" + _MONTHS + "), "
        "expo AS (SELECT dev.device_key, m.month, " + _EXPOSED_HOURS + " AS h FROM dev CROSS JOIN months m) "
        "SELECT dev.{key}, x.month, round(coalesce(sum(pd.v), 0)::numeric * 1000000)::bigint, "
        "round(sum(x.h)::numeric * 1000000)::bigint "
        "FROM expo x JOIN dev ON dev.device_key = x.device_key "
        "LEFT JOIN per_device pd ON pd.device_key = x.device_key AND pd.month = x.month "
        "WHERE x.h > 0 GROUP BY 1, 2"
    ).format(scope=sql.SQL(_SCOPE), tw=covered, key=key)
    return q, {"hold": HOLD_FACTOR} if source == "raw" else {}


def activity_query(*, level: Level) -> tuple[sql.Composed, dict[str, Any]]:
    """SQL giving (key, month, usage, successes, active_device_days, exposure_device_days) from the monthly rollup.

    Exposure counts the device-days from activation (or the month start) to the month end, so an
    account activated mid-month is not penalised for days before it had the product.
    """
    key = _key(level)
    q = sql.SQL(
        "WITH {scope}, "
        "months AS (" + _MONTHS + "), "
        "expo AS (SELECT dev.device_key, m.month, " + _EXPOSED_DAYS + " AS days FROM dev CROSS JOIN months m), "
        "act AS ("
        "  SELECT r.device_key, r.month, r.usage_count AS usage, r.success_count AS ok, r.active_days "
        "  FROM rollup_monthly r JOIN dev ON dev.device_key = r.device_key "
        "  WHERE r.month >= %(start)s::date AND r.month < %(end)s::date AND r.active_days > 0) "
        "SELECT dev.{key}, x.month, coalesce(sum(a.usage), 0)::bigint, coalesce(sum(a.ok), 0)::bigint, "
        "       coalesce(sum(a.active_days), 0)::bigint, sum(x.days)::bigint "
        "FROM expo x JOIN dev ON dev.device_key = x.device_key "
        "LEFT JOIN act a ON a.device_key = x.device_key AND a.month = x.month "
        "WHERE x.days > 0 GROUP BY 1, 2"
    ).format(scope=sql.SQL(_SCOPE), key=key)
    return q, {}


def monthly_query(*, level: Level) -> tuple[sql.Composed, dict[str, Any]]:
    """`activity_query`'s and `uptime_query`'s (rollups) columns from one read of the monthly rollup: (key, month,
    usage, successes, active_device_days, exposure_device_days, up, window), on the key-months exposed in days or
    in hours (the other's columns 0 where it has none)."""
    in_days, in_hours = sql.SQL("x.days > 0 AND r.active_days > 0"), sql.SQL("x.h > 0")
    q = sql.SQL(
        "WITH {scope}, "
        "months AS (" + _MONTHS + "), "
        "expo AS (SELECT dev.device_key, dev.{key} AS key, m.month, " + _EXPOSED_DAYS + " AS days, "
        + _EXPOSED_HOURS + " AS h FROM dev CROSS JOIN months m) "
        "SELECT x.key, x.month, coalesce(sum(r.usage_count) FILTER (WHERE {days}), 0)::bigint, "
        "coalesce(sum(r.success_count) FILTER (WHERE {days}), 0)::bigint, "
        "coalesce(sum(r.active_days) FILTER (WHERE {days}), 0)::bigint, "
        "coalesce(sum(x.days) FILTER (WHERE x.days > 0), 0)::bigint, "
        "round(coalesce(sum(r.covered_us::numeric / 3600000000) FILTER (WHERE {hours}), 0) * 1000000)::bigint, "
        "coalesce(round(sum(x.h) FILTER (WHERE {hours})::numeric * 1000000), 0)::bigint "
        "FROM expo x LEFT JOIN rollup_monthly r ON r.device_key = x.device_key AND r.month = x.month "
        "WHERE x.days > 0 OR x.h > 0 GROUP BY 1, 2"
    ).format(scope=sql.SQL(_SCOPE), key=_key(level), days=in_days, hours=in_hours)
    return q, {}


COHORT_ACCOUNTS = sql.SQL(
    "WITH " + _SCOPE + " SELECT dev.account_id, coalesce(a.segment, ''), count(*)::int, "
    "min(dev.activated_at) FROM dev LEFT JOIN accounts a ON a.account_id = dev.account_id "
    + _t("WHERE dev.activated_at < {E} GROUP BY 1, 2 ORDER BY 1")
)
"""(account_id, segment, devices, first activation) of the cohort's accounts active before the window end."""

SURVEY_RECORDS = sql.SQL(
    "SELECT d.account_id, e.ts, e.detail FROM events e JOIN devices d ON d.device_key = e.device_key "
    "WHERE e.kind = 'feedback' AND e.detail ->> 'survey' = %(survey)s "
    "AND (%(product)s::text IS NULL OR d.product_id = %(product)s::text) ORDER BY e.ts"
)
"""Feedback events carrying a pricing survey answer in `detail` (`{"survey": ..., ...}`)."""

"""Billable metrics over telemetry: per account (or device) × UTC calendar month, aggregated in SQL.

The SQL lives in `pricing.queries`; this module runs it and shapes the rows into dense arrays
(keys × months, zeros where there was no data). Quantities come back from SQL rounded to a stated
number of decimals, as integer counts of 10^-decimals: exact fixed-point integers (`FixedArray`), so billing them
is exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql

from cxp.pricing.core.integers import absmax, narrow, round_div, widen
from cxp.pricing.core.money import RoundingMode
from cxp.pricing.core.plans import Aggregation, BillableMetric, MetricFilter, Plan
from cxp.pricing.core.vectorised import FixedArray
from cxp.pricing.errors import PricingError
from cxp.pricing.queries import (
    COHORT_ACCOUNTS,
    Level,
    activity_query,
    metric_query,
    monthly_query,
    rollup_metrics_query,
    rollup_usage_column,
    scope_params,
    uptime_query,
)
from cxp.store.errors import mapped_errors


def add_months(d: date, n: int) -> date:
    """The 1st of the month `n` months after `d`'s month (before it when n < 0)."""
    k = d.year * 12 + d.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """`months` consecutive UTC calendar months from `first_month` (the 1st of a month)."""

    first_month: date
    months: int

    def __post_init__(self) -> None:
        if self.first_month.day != 1:
            raise PricingError(f"a billing period starts on the 1st of a month, got {self.first_month}")
        if self.months < 1:
            raise PricingError(f"a billing period spans at least one month, got {self.months}")

    @classmethod
    def covering(cls, *, start: datetime, end: datetime) -> BillingPeriod:
        """The calendar months touching [start, end) (both tz-aware)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise PricingError("start and end must be timezone-aware")
        s, e = start.astimezone(UTC), end.astimezone(UTC)
        first = date(s.year, s.month, 1)
        last = (
            date(e.year, e.month, 1)
            if e > datetime.combine(date(e.year, e.month, 1), time(0), UTC)
            else (add_months(date(e.year, e.month, 1), -1))
        )
        return cls(first, (last.year - first.year) * 12 + last.month - first.month + 1)

    @property
    def start(self) -> date:
        """First day (inclusive)."""
        return self.first_month

    @property
    def end(self) -> date:
        """The day after the last month (exclusive)."""
        return add_months(self.first_month, self.months)

    @property
    def month_starts(self) -> tuple[date, ...]:
        """The first day of every month in the period."""
        return tuple(add_months(self.first_month, i) for i in range(self.months))

    def start_at(self) -> datetime:
        """The start as a UTC instant."""
        return datetime.combine(self.start, time(0), UTC)

    def end_at(self) -> datetime:
        """The end as a UTC instant."""
        return datetime.combine(self.end, time(0), UTC)


@dataclass(frozen=True, slots=True)
class Cohort:
    """Which accounts: those with a device of `product` (only those devices count), in `segment`, in `account_ids`."""

    product: str | None = None
    segment: str | None = None
    account_ids: tuple[str, ...] | None = None


ALL_ACCOUNTS = Cohort()


@dataclass(frozen=True)
class MetricTable:
    """A metric's values per key (account or device) × month as exact fixed-point numbers."""

    metric: BillableMetric
    level: Level
    keys: tuple[str, ...]
    months: tuple[date, ...]
    values: FixedArray


@dataclass(frozen=True)
class CohortAccounts:
    """The accounts of a cohort: segment, device count and first activation, in account-id order."""

    account_ids: tuple[str, ...]
    segments: tuple[str, ...]
    devices: np.ndarray
    first_activation: tuple[datetime, ...]


def _params(period: BillingPeriod, cohort: Cohort, until: datetime | None) -> dict[str, Any]:
    accounts = list(cohort.account_ids) if cohort.account_ids is not None else None
    return scope_params(
        start=period.start,
        end=period.end,
        product=cohort.product,
        segment=cohort.segment,
        accounts=accounts,
        until=until,
    )


def fetch_rows(conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of `query`, with psycopg errors mapped to the store's exceptions."""
    with mapped_errors():
        return conn.execute(query, params).fetchall()


def list_cohort_accounts(conn: psycopg.Connection, *, cohort: Cohort, period: BillingPeriod) -> CohortAccounts:
    """The cohort's accounts with a device activated before the period ends."""
    rows = fetch_rows(conn, COHORT_ACCOUNTS, _params(period, cohort, None))
    return CohortAccounts(
        tuple(r[0] for r in rows),
        tuple(r[1] for r in rows),
        np.array([r[2] for r in rows], dtype=np.int64),
        tuple(r[3] for r in rows),
    )


@dataclass(frozen=True, slots=True)
class _Grid:
    """Fetched rows (key, month, v_0 … v_n) placed on a keys × months grid; rows of other keys or months left out."""

    keys: tuple[str, ...]
    months: int
    rows: list[tuple[Any, ...]]
    at: tuple[np.ndarray, np.ndarray]

    def column(self, i: int) -> np.ndarray:
        """v_i (integers) per key × month as int64, 0 where there was no row or a NULL."""
        out = np.zeros((len(self.keys), self.months), dtype=np.int64)
        out[self.at] = np.fromiter((r[2 + i] or 0 for r in self.rows), dtype=np.int64, count=len(self.rows))
        return out


def _grid(rows: Sequence[tuple[Any, ...]], keys: Sequence[str] | None, months: Sequence[date]) -> _Grid:
    """`rows` on the grid of `keys` (default: the keys the rows hold, sorted) × `months`."""
    if keys is None:
        keys = sorted({r[0] for r in rows})
    kidx = {k: i for i, k in enumerate(keys)}
    midx = {m: j for j, m in enumerate(months)}
    kept = [r for r in rows if r[0] in kidx and r[1] in midx]
    at = (np.fromiter((kidx[r[0]] for r in kept), dtype=np.intp, count=len(kept)),
          np.fromiter((midx[r[1]] for r in kept), dtype=np.intp, count=len(kept)))
    return _Grid(tuple(keys), len(months), kept, at)


def get_metric_table(
    conn: psycopg.Connection,
    *,
    metric: BillableMetric,
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    level: Level = "account",
    decimals: int = 3,
    keys: Sequence[str] | None = None,
    until: datetime | None = None,
) -> MetricTable:
    """`metric` per account (or device) and month of `period`, aggregated in SQL from rollups (raw where needed)."""
    if not 0 <= decimals <= 9:
        raise PricingError(f"decimals must be within [0, 9], got {decimals}")
    q, extra = metric_query(metric=metric, level=level, decimals=decimals)
    rows = fetch_rows(conn, q, {**_params(period, cohort, until), **extra})
    grid = _grid(rows, keys, period.month_starts)
    return MetricTable(metric, level, grid.keys, period.month_starts, FixedArray(grid.column(0), decimals))


def get_metric_tables(
    conn: psycopg.Connection,
    *,
    metrics: Mapping[Hashable, BillableMetric],
    period: BillingPeriod,
    keys: Sequence[str],
    cohort: Cohort = ALL_ACCOUNTS,
    level: Level = "account",
    decimals: int = 3,
    until: datetime | None = None,
) -> dict[Hashable, MetricTable]:
    """`get_metric_table` of each metric for the given keys; the usage metrics that one daily rollup answers are read
    together, in one scan of that rollup (`rollup_metrics_query`), the others one by one."""
    if not 0 <= decimals <= 9:
        raise PricingError(f"decimals must be within [0, 9], got {decimals}")
    by_table: dict[str, list[Hashable]] = {}
    for name, metric in metrics.items():
        answered = rollup_usage_column(metric)
        by_table.setdefault(answered[0] if answered else "", []).append(name)
    months = period.month_starts
    out: dict[Hashable, MetricTable] = {}
    for table, names in by_table.items():
        if not table or len(names) == 1:
            for name in names:
                out[name] = get_metric_table(conn, metric=metrics[name], period=period, cohort=cohort, level=level,
                                             decimals=decimals, keys=keys, until=until)
            continue
        q, extra = rollup_metrics_query(metrics=[metrics[n] for n in names], level=level, decimals=decimals)
        rows = fetch_rows(conn, q, {**_params(period, cohort, until), **extra})
        grid = _grid(rows, keys, months)
        for i, name in enumerate(names):
            out[name] = MetricTable(metrics[name], level, grid.keys, months, FixedArray(grid.column(i), decimals))
    return {name: out[name] for name in metrics}


@dataclass(frozen=True)
class Uptime:
    """Heartbeat-covered hours and exposure hours per key × month; `pct` is their ratio × 100 (exact, 3 decimals)."""

    keys: tuple[str, ...]
    months: tuple[date, ...]
    up_hours: np.ndarray
    exposure_hours: np.ndarray
    pct: FixedArray


def get_uptime(
    conn: psycopg.Connection,
    *,
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    level: Level = "account",
    keys: Sequence[str] | None = None,
    until: datetime | None = None,
    source: Literal["rollups", "raw"] = "rollups",
) -> Uptime:
    """Uptime % per key and month: a heartbeat covers min(gap, 1.5 × interval); 100 where there was no exposure.

    `source`: the covers the rollup refresh keeps per device-day, or every raw heartbeat (same answer)."""
    q, extra = uptime_query(level=level, source=source)
    rows = fetch_rows(conn, q, {**_params(period, cohort, until), **extra})
    grid = _grid(rows, keys, period.month_starts)
    return _uptime(grid.keys, period.month_starts, grid.column(0), grid.column(1))


def _uptime(keys: tuple[str, ...], months: tuple[date, ...], up_uh: np.ndarray, ex_uh: np.ndarray) -> Uptime:
    """The uptime of covered and exposed hours given as integer counts of 10^-6 h (the floats: the exact decimals)."""
    covered = widen(np.minimum(up_uh, ex_uh), absmax(up_uh) * 100_000)
    # min(up / exposure, 1) × 100 rounded half-even to 3 decimals (as Decimal's quantize), 100 without exposure
    pct = narrow(round_div(covered * 100_000, np.maximum(ex_uh, 1), RoundingMode.HALF_EVEN))
    pct = np.where(ex_uh > 0, pct, 100_000).astype(np.int64)
    return Uptime(keys, months, up_uh / 1e6, ex_uh / 1e6, FixedArray(pct, 3))


@dataclass(frozen=True)
class Activity:
    """Usage events, successes, active device-days and exposure device-days per key × month (rollup_daily)."""

    keys: tuple[str, ...]
    months: tuple[date, ...]
    usage: np.ndarray
    successes: np.ndarray
    active_days: np.ndarray
    exposure_days: np.ndarray

    def health_proxy(self) -> np.ndarray:
        """Experience-health proxy 0–100: 60 × success rate + 40 × active-day share; NaN without exposure.

        Used while the analytics health service is not available to pricing (see docs/pricing.md).
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            success = np.where(self.usage > 0, self.successes / np.maximum(self.usage, 1), 1.0)
            active = np.where(self.exposure_days > 0, self.active_days / np.maximum(self.exposure_days, 1), np.nan)
        return np.where(self.exposure_days > 0, 60.0 * success + 40.0 * np.minimum(active, 1.0), np.nan)


def get_activity(
    conn: psycopg.Connection,
    *,
    period: BillingPeriod,
    cohort: Cohort = ALL_ACCOUNTS,
    level: Level = "account",
    keys: Sequence[str] | None = None,
    until: datetime | None = None,
) -> Activity:
    """Activity per key and month from rollup_daily (the experience-health proxy's inputs)."""
    q, extra = activity_query(level=level)
    rows = fetch_rows(conn, q, {**_params(period, cohort, until), **extra})
    grid = _grid(rows, keys, period.month_starts)
    return Activity(grid.keys, period.month_starts, *(grid.column(i) for i in range(4)))


def get_activity_and_uptime(
    conn: psycopg.Connection,
    *,
    period: BillingPeriod,
    keys: Sequence[str],
    cohort: Cohort = ALL_ACCOUNTS,
    level: Level = "account",
    until: datetime | None = None,
) -> tuple[Activity, Uptime]:
    """`get_activity` and `get_uptime` (from the rollups) of `keys`, from one read of the monthly rollup."""
    q, extra = monthly_query(level=level)
    rows = fetch_rows(conn, q, {**_params(period, cohort, until), **extra})
    grid = _grid(rows, keys, period.month_starts)
    activity = Activity(grid.keys, period.month_starts, *(grid.column(i) for i in range(4)))
    return activity, _uptime(grid.keys, period.month_starts, grid.column(4), grid.column(5))


def default_usage_metric(*, key: str) -> BillableMetric:
    """A usage key no plan metric defines: the count of usage events of the touchpoint named `key`."""
    return BillableMetric(name=key, aggregation=Aggregation.COUNT, filter=MetricFilter(touchpoints=(key,)))


def default_outcome_metric(*, key: str) -> BillableMetric:
    """An outcome key: the count of *successful* usage events of the touchpoint named `key`."""
    return BillableMetric(
        name=key, aggregation=Aggregation.COUNT, filter=MetricFilter(touchpoints=(key,), success_only=True)
    )


def resolve_metrics(
    *, plans: Sequence[Plan], metrics: Sequence[BillableMetric] = ()
) -> tuple[dict[str, BillableMetric], dict[str, BillableMetric], bool]:
    """(usage metrics, outcome metrics, needs uptime) every plan reads; explicit definitions win over defaults.

    Definitions come from `metrics` first, then the plans' own `metrics`; two different definitions
    of one name are an error (two plans must bill the same quantity under one name).
    """
    defs: dict[str, BillableMetric] = {m.name: m for m in metrics}
    for p in plans:
        for m in p.metrics:
            if m.name in defs and defs[m.name] != m and m.name not in {x.name for x in metrics}:
                raise PricingError(f"metric {m.name!r} is defined differently by two plans")
            defs.setdefault(m.name, m)
    usage: dict[str, BillableMetric] = {}
    outcomes: dict[str, BillableMetric] = {}
    uptime = False
    for p in plans:
        need = p.required_inputs()
        for k in sorted(need.usage_keys):
            usage[k] = defs.get(k) or default_usage_metric(key=k)
        for k in sorted(need.outcome_keys):
            outcomes[k] = defs.get(k) or default_outcome_metric(key=k)
        uptime |= need.needs_uptime
    return usage, outcomes, uptime

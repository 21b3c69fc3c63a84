"""Billable metrics over telemetry: per account (or device) × UTC calendar month, aggregated in SQL.

The SQL lives in `pricing.queries`; this module runs it and shapes the rows into dense arrays
(keys × months, zeros where there was no data). Quantities come back rounded in SQL to a stated
number of decimals and become exact fixed-point integers (`FixedArray`), so billing them is exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql

from cxp.pricing.core.money import EXACT
from cxp.pricing.core.plans import Aggregation, BillableMetric, MetricFilter, Plan
from cxp.pricing.core.vectorised import FixedArray
from cxp.pricing.errors import PricingError
from cxp.pricing.queries import (
    COHORT_ACCOUNTS,
    Level,
    activity_query,
    metric_query,
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


def _dense(
    rows: Sequence[tuple], keys: Sequence[str] | None, months: Sequence[date], ncols: int
) -> tuple[tuple[str, ...], list[list[list[Any]]]]:
    """Rows (key, month, v1..vn) as keys × months × n cells (None where absent); rows outside `keys` dropped."""
    if keys is None:
        keys = sorted({r[0] for r in rows})
    kidx = {k: i for i, k in enumerate(keys)}
    midx = {m: j for j, m in enumerate(months)}
    cells: list[list[list[Any]]] = [[[None] * ncols for _ in months] for _ in keys]
    for r in rows:
        i, j = kidx.get(r[0]), midx.get(r[1])
        if i is not None and j is not None:
            cells[i][j] = list(r[2:])
    return tuple(keys), cells


def _fixed(cells: list[list[list[Any]]], col: int, decimals: int, months: int) -> FixedArray:
    shape = (len(cells), months)
    out = np.zeros(shape, dtype=np.int64)
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            v = c[col]
            if v is not None:
                # Rounded to `decimals` in SQL, so the scaled value is an integer.
                out[i, j] = int(Decimal(v).scaleb(decimals, EXACT))
    return FixedArray(out, decimals)


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
    months = period.month_starts
    ks, cells = _dense(rows, keys, months, 1)
    return MetricTable(metric, level, ks, months, _fixed(cells, 0, decimals, len(months)))


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
        ks, cells = _dense(rows, keys, months, len(names))
        for i, name in enumerate(names):
            out[name] = MetricTable(metrics[name], level, ks, months, _fixed(cells, i, decimals, len(months)))
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
    ks, cells = _dense(rows, keys, period.month_starts, 2)
    up = np.array([[float(c[0]) if c[0] is not None else 0.0 for c in row] for row in cells]).reshape(
        len(ks), period.months
    )
    ex = np.array([[float(c[1]) if c[1] is not None else 0.0 for c in row] for row in cells]).reshape(
        len(ks), period.months
    )
    pct = np.empty(up.shape, dtype=np.int64)
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            if c[1] is None or c[1] == 0:
                pct[i, j] = 100_000
            else:
                ratio = min(Decimal(c[0]) / Decimal(c[1]), Decimal(1)) * 100
                pct[i, j] = int(ratio.quantize(Decimal("0.001")).scaleb(3, EXACT))
    return Uptime(ks, period.month_starts, up, ex, FixedArray(pct, 3))


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
    ks, cells = _dense(rows, keys, period.month_starts, 4)

    def col(k: int) -> np.ndarray:
        return np.array([[int(c[k]) if c[k] is not None else 0 for c in row] for row in cells], dtype=np.int64).reshape(
            len(ks), period.months
        )

    return Activity(ks, period.month_starts, col(0), col(1), col(2), col(3))


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

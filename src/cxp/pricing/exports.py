"""Backtest results written out: the bills (or the per-plan summary) as CSV or Parquet, or as job bill rows."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cxp.core.csvout import neutralise
from cxp.pricing.core.backtest import BacktestResult
from cxp.pricing.core.money import decimals_of
from cxp.store.job_results import BillTuple


def export_csv(*, result: BacktestResult, path: Path | str, summary: bool = False) -> Path:
    """Write the bills (or the per-plan summary) as CSV; Decimals are written exactly as text, formula-leading text
    is neutralised."""
    rows = result.summary_rows() if summary else result.rows()
    target = Path(path)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["plan"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else neutralise(str(v))) for k, v in row.items()})
    return target


def export_parquet(*, result: BacktestResult, path: Path | str) -> Path:
    """Write the bills as Parquet with the bill as decimal128 (exact) and the month as a date."""
    # pyarrow is heavy and only needed here, so it loads on first export.
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = result.rows()
    scale = max(decimals_of(value=result.rule.quantum), 0)
    table = pa.table(
        {
            "plan": pa.array([r["plan"] for r in rows], pa.string()),
            "account_id": pa.array([r["account_id"] for r in rows], pa.string()),
            "segment": pa.array([r["segment"] for r in rows], pa.string()),
            "month": pa.array([r["month"] for r in rows], pa.date32()),
            "bill": pa.array([r["bill"] for r in rows], pa.decimal128(18, scale)),
            "currency": pa.array([r["currency"] for r in rows], pa.string()),
        }
    )
    target = Path(path)
    pq.write_table(table, target)
    return target


def bill_tuples(result: BacktestResult) -> Iterator[BillTuple]:
    """The bills in `BacktestResult.rows()` order, keyed (plan index, account index × months + month index)."""
    cube = result.cube
    months = len(cube.months)
    accounts, month_indexes = np.nonzero(cube.active_mask())
    keys = (accounts * months + month_indexes).tolist()
    cells = list(zip(accounts.tolist(), month_indexes.tolist(), strict=True))
    for p, plan in enumerate(result.plan_keys):
        quanta = result.bills[plan][accounts, month_indexes].tolist()
        for k, (i, j), q in zip(keys, cells, quanta, strict=True):
            yield (p, k, plan, cube.account_ids[i], cube.segments[i], cube.months[j], result.rule.from_quanta(q),
                   result.currency)

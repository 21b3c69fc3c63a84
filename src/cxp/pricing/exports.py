"""Backtest results written to files: the bills (or the per-plan summary) as CSV, the bills as Parquet."""

from __future__ import annotations

import csv
from pathlib import Path

from cxp.core.csvout import neutralise
from cxp.pricing.core.backtest import BacktestResult
from cxp.pricing.core.money import decimals_of


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

"""The service recovery paradox, measured: after an excellent recovery from a mild failure, is satisfaction higher
than where it would have been without the failure?

Each device's change in satisfaction = mean answer in the `horizon` after its reference time − mean answer in the
same span before (its own level removed, so who got hit does not matter). Devices hit by an incident are
*excellent* when they recovered within `fast_recovery_s` after at most `mild_failures` failed uses, else *other*;
*none* = devices of the same product not hit, referred to the incident's recovery. The paradox estimate is the
excellent − none difference of changes, per product and pooled with inverse-variance weights, with its 95 %
interval, on CSAT (1–5) and on NPS answers (0–10) separately. Verdict, on CSAT (far more answers than NPS):
*present* when its interval lies above 0, *absent* when it lies below the smallest lift that would matter (0.25
CSAT points), else *not shown*; *not enough data* below `min_n` devices with answers before and after in a group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import float_column, require_columns, to_nullable
from cxp.analytics.errors import InvalidParameter

METRICS = {"csat": 0.25, "nps": 0.5}  # metric → the smallest lift that would matter (answer points)
PRIMARY = "csat"  # the verdict's metric: most answers (in-app prompts and surveys); NPS is reported beside it


@dataclass(frozen=True)
class ParadoxResult:
    """Per metric: the pooled excellent − none difference of satisfaction changes with its CI, and the verdict."""

    table: pd.DataFrame  # metric, difference, ci_low, ci_high, n_excellent, n_none, products, reason
    groups: pd.DataFrame  # group, metric, devices, change_mean
    verdict: str


def recovery_paradox(*, devices: pd.DataFrame, min_n: int = 8) -> ParadoxResult:
    """`devices`: device_id, product_id, group ('excellent' | 'other' | 'none'), and per metric m in METRICS:
    m_before, m_after (mean answers; NaN without any)."""
    require_columns(devices, ["device_id", "product_id", "group"], what="recovery_paradox")
    if min_n < 2:
        raise InvalidParameter("min_n must be ≥ 2")
    rows, group_rows = [], []
    for metric, material in METRICS.items():
        change = float_column(devices, f"{metric}_after") - float_column(devices, f"{metric}_before")
        frame = devices.assign(change=change)[np.isfinite(change)]
        for group, part in frame.groupby("group"):
            group_rows.append(
                {"group": group, "metric": metric, "devices": len(part), "change_mean": float(part["change"].mean())}
            )
        estimates, variances, n_exc, n_none, products = [], [], 0, 0, []
        for product_id, part in frame.groupby("product_id"):
            a = part.loc[part["group"] == "excellent", "change"].to_numpy(dtype=float)
            b = part.loc[part["group"] == "none", "change"].to_numpy(dtype=float)
            if a.size < 2 or b.size < 2:
                continue
            var = a.var(ddof=1) / a.size + b.var(ddof=1) / b.size
            if not var > 0:
                continue
            estimates.append(a.mean() - b.mean())
            variances.append(var)
            n_exc, n_none = n_exc + a.size, n_none + b.size
            products.append(str(product_id))
        row: dict[str, object] = {
            "metric": metric,
            "n_excellent": n_exc,
            "n_none": n_none,
            "products": ", ".join(products),
            "material": material,
        }
        if n_exc < min_n or n_none < min_n:
            row.update(difference=np.nan, ci_low=np.nan, ci_high=np.nan)
            row["reason"] = f"not enough data: {n_exc} excellent-recovery and {n_none} undisrupted devices < {min_n}"
        else:
            w = 1.0 / np.asarray(variances)
            est = float((w * np.asarray(estimates)).sum() / w.sum())
            se = float(np.sqrt(1.0 / w.sum()))
            z = float(sps.norm.ppf(0.975))
            row.update(difference=est, ci_low=est - z * se, ci_high=est + z * se, reason=None)
        rows.append(row)
    table = pd.DataFrame(rows)
    primary = table[table["metric"] == PRIMARY].iloc[0]
    low, high = float(primary["ci_low"]), float(primary["ci_high"])
    if not np.isfinite(low):
        verdict = "not enough data"
    elif low > 0:
        verdict = "present"
    elif high < float(primary["material"]):
        verdict = "absent"
    else:
        verdict = "not shown"
    return ParadoxResult(to_nullable(table), to_nullable(pd.DataFrame(group_rows)), verdict)

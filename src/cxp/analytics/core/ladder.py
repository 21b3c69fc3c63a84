"""Smart-capability ladder: monitoring → control → optimisation → autonomy, per device, product and segment.

A device *reached* a level at its first successful use of a touchpoint of that level (touchpoints carry their
level in the catalogue; occasion touchpoints such as pairing, updates or support carry none, so the ladder
counts the capabilities customers choose to use). A device *climbed* when it reached every level its
product's catalogue offers; climbers are compared with the others on health and churn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxp.analytics.core._frames import require_columns
from cxp.analytics.core.stats import diff_with_variances
from cxp.core.stats import Difference, welch_difference

LEVELS: tuple[str, ...] = ("monitoring", "control", "optimisation", "autonomy")


def device_ladder(*, devices: pd.DataFrame, first_uses: pd.DataFrame, offered: pd.DataFrame) -> pd.DataFrame:
    """One row per device: days from activation to each level (None = not reached; `days_to_<level>`),
    levels_reached, levels_offered and climber.

    devices: device_key, product_id, activated_at; first_uses: device_key, capability, first_at;
    offered: product_id, capability (the levels each product's catalogue offers).
    """
    require_columns(devices, ["device_key", "product_id", "activated_at"], what="ladder devices")
    require_columns(first_uses, ["device_key", "capability", "first_at"], what="ladder first uses")
    require_columns(offered, ["product_id", "capability"], what="ladder catalogue")
    out = devices[["device_key", "product_id"]].copy().reset_index(drop=True)
    activated = pd.to_datetime(devices["activated_at"], utc=True).reset_index(drop=True)
    firsts = first_uses.assign(first_at=pd.to_datetime(first_uses["first_at"], utc=True))
    wide = firsts.pivot_table(index="device_key", columns="capability", values="first_at", aggfunc="min")
    n_offered = offered.drop_duplicates().groupby("product_id")["capability"].nunique()
    offered_sets = offered.groupby("product_id")["capability"].agg(frozenset)
    reached_count = np.zeros(len(out), dtype=int)
    reached_offered = np.zeros(len(out), dtype=int)
    for level in LEVELS:
        if level in wide.columns:
            first = out["device_key"].map(wide[level])
            days = (pd.to_datetime(first, utc=True) - activated).dt.total_seconds() / 86_400.0
            days = days.clip(lower=0.0)
        else:
            days = pd.Series(np.nan, index=out.index)
        out[f"days_to_{level}"] = days.astype(float)
        hit = days.notna().to_numpy()
        reached_count += hit
        offers_level = {product: level in levels for product, levels in offered_sets.items()}
        in_catalogue = out["product_id"].map(offers_level).fillna(False).to_numpy(dtype=bool)
        reached_offered += hit & in_catalogue
    out["levels_reached"] = reached_count
    out["levels_offered"] = out["product_id"].map(n_offered).fillna(0).astype(int)
    out["climber"] = (out["levels_offered"] > 0) & (reached_offered >= out["levels_offered"])
    return out


@dataclass(frozen=True)
class LevelShare:
    """Devices of one group that reached one level, and the median days from activation to it."""

    group: tuple[str, ...]
    level: str
    devices: int
    reached: int
    share: float | None  # 0–1
    median_days: float | None


def level_shares(*, ladder: pd.DataFrame, by: Sequence[str], offered: pd.DataFrame) -> list[LevelShare]:
    """Share of devices per group that reached each level the group's products offer, with median days to it."""
    out = []
    offered_by_product = offered.groupby("product_id")["capability"].agg(frozenset)
    for key, group in ladder.groupby(list(by), sort=True):
        keys = tuple(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        levels = frozenset().union(*(offered_by_product.get(p, frozenset()) for p in group["product_id"].unique()))
        for level in LEVELS:
            if level not in levels:
                continue
            days = group[f"days_to_{level}"].to_numpy(dtype=float)
            hit = days[np.isfinite(days)]
            n = len(group)
            out.append(
                LevelShare(
                    group=keys,
                    level=level,
                    devices=n,
                    reached=len(hit),
                    share=len(hit) / n if n else None,
                    median_days=float(np.median(hit)) if len(hit) else None,
                )
            )
    return out


def climber_contrast(*, ladder: pd.DataFrame, min_n: int = 10) -> tuple[Difference, Difference]:
    """(health, churn) of climbers minus the others: Welch difference of mean health score (points) and the
    normal difference of churn shares (0–1), 95% CIs; "not enough data" when a group has fewer than `min_n`.

    ladder: climber, health (0–100, may be missing), churned (bool).
    """
    require_columns(ladder, ["climber", "health", "churned"], what="climber contrast")
    climbers = ladder[ladder["climber"].astype(bool)]
    others = ladder[~ladder["climber"].astype(bool)]
    health = welch_difference(
        a=climbers["health"].to_numpy(dtype=float), b=others["health"].to_numpy(dtype=float), min_n=min_n
    )
    n_a, n_b = len(climbers), len(others)
    if n_a < min_n or n_b < min_n:
        churn = Difference(
            None, None, None, n_a, n_b, test="normal", reason=f"not enough data: n_a={n_a}, n_b={n_b} (need ≥ {min_n})"
        )
    else:
        p_a = float(climbers["churned"].astype(bool).mean())
        p_b = float(others["churned"].astype(bool).mean())
        churn = diff_with_variances(
            est_a=p_a, var_a=p_a * (1 - p_a) / n_a, n_a=n_a, est_b=p_b, var_b=p_b * (1 - p_b) / n_b, n_b=n_b
        )
    return health, churn

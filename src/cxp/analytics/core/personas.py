"""Persona features per device (log ratios to the product's norm) and persona names in product-manager words."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from cxp.analytics.core._frames import require_columns
from cxp.analytics.core.segments import HIGH_Z, name_cluster

PERSONA_FEATURES: dict[str, str] = {
    "active_days_per_week": "active days per week ÷ the product's median (days since activation, up to the last use)",
    "uses_per_active_day": "uses per active day ÷ the product's median",
    "extra_feature_share": "share of uses on non-core touchpoints ÷ the product's median",
    "satisfaction": "mean z-score of the device's NPS/CSAT/CES answers minus its product's mean, shrunk towards 0"
    " by n/(n+2) (0 without answers)",
}
SATISFACTION_PRIOR_ANSWERS = 2.0  # shrinks a device's satisfaction by n / (n + 2): two answers count half
MIN_RATIO_TO_NORM = 0.05  # log ratios are floored here so a device with (almost) no use is not −inf


def persona_features(
    *,
    devices: pd.DataFrame,
    satisfaction: pd.DataFrame,
    start: date,
    end: date,
    min_history_days: int = 21,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per device: the persona features (PERSONA_FEATURES) and, for the devices left out, why.

    `devices`: device_key, device_id, product_id, activated_at, active_days, uses, core_uses, last_use_on (the
    usage over [start, end]). `satisfaction`: device_key, satisfaction, answers (voice.satisfaction_index).
    Devices with fewer than `min_history_days` days in the window, or no use, are left out.
    """
    require_columns(
        devices,
        ["device_key", "device_id", "product_id", "activated_at", "active_days", "uses", "core_uses", "last_use_on"],
        what="persona_features",
    )
    frame = devices.reset_index(drop=True)
    activated_on = pd.to_datetime(frame["activated_at"], utc=True).dt.tz_localize(None).dt.normalize()
    window_start, window_end = pd.Timestamp(start), pd.Timestamp(end)
    history_days = (window_end - np.maximum(activated_on, window_start)).dt.days + 1
    # observed life: from the day after coming online (a partial day) to the last use
    first_full_day = np.maximum(activated_on + pd.Timedelta(days=1), window_start)
    last_use_on = pd.to_datetime(frame["last_use_on"]).clip(upper=window_end)
    observed_days = ((last_use_on - first_full_day).dt.days + 1).clip(lower=1)
    full_active_days = (frame["active_days"].fillna(0) - (activated_on >= window_start).astype(int)).clip(lower=0)
    excluded: dict[str, str] = {}
    too_new = history_days < min_history_days
    unused = frame["uses"].fillna(0) <= 0
    for device_id, days in zip(frame.loc[too_new, "device_id"], history_days[too_new], strict=True):
        excluded[str(device_id)] = f"too new to segment: {max(int(days), 0)} days of history < {min_history_days}"
    for device_id in frame.loc[unused & ~too_new, "device_id"]:
        excluded[str(device_id)] = "no use in the window"
    keep = ~too_new & ~unused
    kept = frame[keep].copy()
    kept["active_days_per_week"] = (full_active_days[keep] / observed_days[keep] * 7.0).astype(float)
    kept["uses_per_active_day"] = kept["uses"] / kept["active_days"].where(kept["active_days"] > 0)
    kept["extra_feature_share"] = 1.0 - kept["core_uses"] / kept["uses"]
    kept = kept.merge(satisfaction[["device_key", "satisfaction", "answers"]], on="device_key", how="left")
    centred = kept["satisfaction"] - kept.groupby("product_id")["satisfaction"].transform("mean")
    shrunk = (centred * kept["answers"] / (kept["answers"] + SATISFACTION_PRIOR_ANSWERS)).fillna(0.0)

    def log_ratio_to_norm(column: str) -> pd.Series:
        median = kept.groupby("product_id")[column].transform("median")
        return np.log(np.clip(kept[column] / median.where(median > 0), MIN_RATIO_TO_NORM, None))

    features = pd.DataFrame(
        {
            "entity_id": kept["device_id"].to_numpy(),
            "active_days_per_week": log_ratio_to_norm("active_days_per_week").to_numpy(dtype=float),
            "uses_per_active_day": log_ratio_to_norm("uses_per_active_day").to_numpy(dtype=float),
            "extra_feature_share": log_ratio_to_norm("extra_feature_share").to_numpy(dtype=float),
            "satisfaction": shrunk.to_numpy(dtype=float),
            "product_id": kept["product_id"].to_numpy(),
        }
    )
    return features, excluded


def persona_name(*, centroid_z: Mapping[str, float]) -> str:
    """Product-manager name: the usage-based cluster name, with satisfaction as a qualifier."""
    roles = {
        "active_days_per_week": centroid_z.get("active_days_per_week", 0.0),
        "uses_per_active_day": centroid_z.get("uses_per_active_day", 0.0),
        "touchpoints_used": centroid_z.get("extra_feature_share", 0.0),
    }
    name = name_cluster(centroid_z=roles)
    satisfaction = centroid_z.get("satisfaction", 0.0)
    if satisfaction <= -HIGH_Z:
        return f"Unhappy {name[0].lower()}{name[1:]}" if name != "Typical users" else "Unhappy, drifting users"
    if satisfaction >= HIGH_Z and name == "Typical users":
        return "Satisfied typical users"
    return name


def persona_names(*, centroids_z: Mapping[int, Mapping[str, float]]) -> dict[int, str]:
    """A name per cluster; two clusters with one name get their most distinctive feature appended."""
    names = {cluster: persona_name(centroid_z=z) for cluster, z in centroids_z.items()}
    repeated = {n for n in names.values() if list(names.values()).count(n) > 1}
    for cluster, z in centroids_z.items():
        if names[cluster] in repeated:
            feature, value = max(z.items(), key=lambda kv: abs(kv[1]))
            names[cluster] = f"{names[cluster]} ({'high' if value > 0 else 'low'} {feature.replace('_', ' ')})"
    return names


def persona_profile(*, centroid: Mapping[str, float]) -> dict[str, float]:
    """A centroid in reading units: × the product norm for the log-ratio features, SD for satisfaction."""
    return {k: float(math.exp(v)) if k != "satisfaction" else float(v) for k, v in centroid.items()}


def persona_description(*, profile: Mapping[str, float]) -> str:
    """One line: each feature against the product norm."""
    return ", ".join(
        f"{k.replace('_', ' ')} ×{v:.2f} of the product norm" if k != "satisfaction" else f"satisfaction {v:+.2f} SD"
        for k, v in profile.items()
    )

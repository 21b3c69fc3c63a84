"""Planted truth of a loaded fleet read back from its truth tables and telemetry, and matched with what the analytics
found: the recovery proofs (tests/analytics) and `cxp bench truth` share it. The analytics never read the truth."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.models import Disruption

# The simulator sends each device that saw a planted incident's error one recovery of that code within 10 minutes
# after the incident's end: counting them gives the devices the incident hit.
INCIDENT_RECOVERY_LAG = timedelta(minutes=11)


def planted_incidents(conn: psycopg.Connection, incidents: pd.DataFrame) -> pd.DataFrame:
    """The planted incidents as the telemetry can show them, with `devices_hit` (devices that saw the incident's
    error), `first_error_at` (the first error of its code on its touchpoint and product within its span: before
    it nobody used the touchpoint, so nothing could be seen) and `duration_s` (from that first error to the end).

    Planted incidents of one product, touchpoint and code that overlap in time are one incident in the telemetry
    (the same failure, the same code): they are merged, their ids joined with '+'.
    """
    rows: list[dict[str, object]] = []
    for inc in incidents.sort_values("start_at").itertuples(index=False):
        same = [
            r
            for r in rows
            if (r["product_id"], r["touchpoint"], r["code"]) == (inc.product_id, inc.touchpoint, inc.code)
        ]
        if same and same[-1]["end_at"] >= inc.start_at:
            same[-1]["incident_id"] += "+" + inc.incident_id
            same[-1]["end_at"] = max(same[-1]["end_at"], inc.end_at)
            continue
        rows.append(
            {c: getattr(inc, c) for c in ("incident_id", "product_id", "touchpoint", "code", "start_at", "end_at")}
        )
    out = pd.DataFrame(rows)
    hit, first = [], []
    for inc in out.itertuples(index=False):
        hit.append(
            conn.execute(
                "SELECT count(DISTINCT e.device_key) FROM events e JOIN devices d USING (device_key)"
                " WHERE d.product_id = %s AND e.kind = 'recovery' AND e.code = %s AND e.touchpoint = %s"
                " AND e.ts >= %s AND e.ts <= %s",
                (inc.product_id, inc.code, inc.touchpoint, inc.end_at, inc.end_at + INCIDENT_RECOVERY_LAG),
            ).fetchone()[0]
        )
        first.append(
            conn.execute(
                "SELECT min(e.ts) FROM events e JOIN devices d USING (device_key) WHERE d.product_id = %s"
                " AND e.kind = 'error' AND e.code = %s AND e.touchpoint = %s AND e.ts >= %s AND e.ts < %s",
                (inc.product_id, inc.code, inc.touchpoint, inc.start_at, inc.end_at),
            ).fetchone()[0]
        )
    out["devices_hit"] = hit
    out["first_error_at"] = pd.to_datetime(pd.Series(first, dtype=object), utc=True)
    end = pd.to_datetime(out["end_at"], utc=True)
    out["duration_s"] = (
        end - out["first_error_at"].fillna(pd.to_datetime(out["start_at"], utc=True))
    ).dt.total_seconds()
    return out


def match_incidents(
    planted: pd.DataFrame, found: tuple[Disruption, ...], *, start_tolerance: timedelta = timedelta(hours=1)
) -> pd.DataFrame:
    """Pair each planted incident with the detected one of the same product and touchpoint whose start is closest to
    the planted start or to the first error it caused, within `start_tolerance` (each detected incident used once).
    Adds `found` (index into `found` or -1), start_error_s and recovery_s (the detected time to recovery)."""
    used: set[int] = set()
    matched, start_error, recovery = [], [], []
    for inc in planted.itertuples(index=False):
        best, best_gap = -1, np.inf
        for j, d in enumerate(found):
            if j in used or (d.product_id, d.touchpoint) != (inc.product_id, inc.touchpoint):
                continue
            gap = abs((d.start - inc.start_at).total_seconds())
            if pd.notna(inc.first_error_at):
                gap = min(gap, abs((d.start - inc.first_error_at).total_seconds()))
            if gap <= start_tolerance.total_seconds() and gap < best_gap:
                best, best_gap = j, gap
        if best >= 0:
            used.add(best)
        matched.append(best)
        start_error.append((found[best].start - inc.start_at).total_seconds() if best >= 0 else np.nan)
        recovery.append(found[best].time_to_recovery_s if best >= 0 else np.nan)
    out = planted.copy()
    out["found"], out["start_error_s"], out["recovery_s"] = matched, start_error, recovery
    return out


def churn_truth(conn: psycopg.Connection) -> pd.DataFrame:
    """Per device (index device_id): churn_at (as lived, UTC or NaT), activated_at, cause, decided_at, drivers."""
    rows = conn.execute(
        "SELECT g.device_id, g.churn_at, d.activated_at, g.churn_cause, g.decided_at, g.churn_drivers"
        " FROM sim_ground_truth g JOIN devices d USING (device_id)"
    ).fetchall()
    out = pd.DataFrame(rows, columns=["device_id", "churn_at", "activated_at", "cause", "decided_at", "drivers"])
    for column in ("churn_at", "activated_at", "decided_at"):
        out[column] = pd.to_datetime(out[column], utc=True)
    return out.set_index("device_id")


def still_active(truth: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    """The devices activated before `cut` that had not churned by then: the ones a ranking made then can warn of."""
    return truth[(truth["activated_at"] < cut) & ~(truth["churn_at"] < cut)]


def churned_within(truth: pd.DataFrame, ids: list[str], cut: pd.Timestamp, lead_days: int) -> np.ndarray:
    """Bool per id: churned (as lived) within `lead_days` after `cut`."""
    return (truth.loc[ids, "churn_at"] < cut + pd.Timedelta(days=lead_days)).to_numpy(dtype=bool)


def auc_with_ci(y: np.ndarray, score: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """ROC AUC of `score` for the bool labels `y` and its 95 % interval (Hanley & McNeil 1982 standard error)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    a = float(roc_auc_score(y, score))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg))
    return a, max(0.0, a - z * se), min(1.0, a + z * se)


def prior_churn_oracle(fleet: Any, ids: list[str], cut: pd.Timestamp, lead_days: int) -> np.ndarray:
    """The simulator's own up-front churn hazard as a score: P(churn within `lead_days` after `cut` | not before),
    from each device's planted churn probability (persona × error proneness) and the timing law churn_at = timeline
    start + U(0.45, 0.9) × time left (device_sim fleet._device) — everything it plants except the draws."""
    start, end = pd.Timestamp(fleet.start), pd.Timestamp(fleet.end)
    by_id = {d.device_id: (d, p) for d, p in zip(fleet.devices, fleet.profiles, strict=True)}
    out = []
    for device_id in ids:
        device, profile = by_id[device_id]
        persona = fleet.personas[profile.persona]
        factor = profile.error_proneness / persona.error_proneness
        p = min(0.95, persona.churn_prob * factor**0.7)
        begin = max(start, pd.Timestamp(device.activated_at))
        left = (end - begin) / pd.Timedelta(days=1)
        if left < 6:
            out.append(0.0)
            continue

        def by(t: pd.Timestamp, begin: pd.Timestamp = begin, left: float = left) -> float:
            return float(np.clip(((t - begin) / pd.Timedelta(days=1) / left - 0.45) / 0.45, 0.0, 1.0))

        before = by(cut)
        out.append(p * (by(cut + pd.Timedelta(days=lead_days)) - before) / (1.0 - p * before))
    return np.asarray(out)


def last_week_use_share(truth: pd.DataFrame, ids: list[str], cut: pd.Timestamp) -> np.ndarray:
    """Per device: the share of its normal use it still had over the 7 days before `cut` (1 before it decided to
    leave; then (1 − f)^1.5 over the fade from decision to churn, f the fraction elapsed, floor 0.05: the
    simulator's usage_multiplier, device_sim device_state)."""
    decided = truth.loc[ids, "decided_at"]
    churn = truth.loc[ids, "churn_at"]
    shares = []
    for day in range(7):
        t = cut - pd.Timedelta(hours=12 + 24 * day)
        f = ((t - decided) / (churn - decided)).astype(float)
        m = np.where(f.isna() | (f < 0), 1.0, np.maximum(0.05, (1.0 - f.clip(0.0, 1.0)) ** 1.5))
        shares.append(m)
    return np.mean(shares, axis=0)

"""Planted truth of a loaded fleet read back from its truth tables and telemetry, and matched with what the analytics
found: the recovery proofs (tests/analytics) and `cxp bench truth` share it. The analytics never read the truth."""

from __future__ import annotations

from datetime import timedelta

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

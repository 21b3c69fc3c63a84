"""The fleet report: fleet and product health with trend and drags, NPS, and the top concerns ranked."""

from __future__ import annotations

import psycopg

from cxp.analytics.core.health import HealthConfig, aggregate_devices, band_values, score_values
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import (
    ChurnRiskSummary,
    Concern,
    Disruption,
    FleetReport,
    ProductHealthLine,
    TouchpointReport,
    Window,
)
from cxp.analytics.queries._base import concurrently, own_connection, shared_reads
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import empty_window, resolve_window
from cxp.analytics.service.churn import get_churn_risk_summary
from cxp.analytics.service.disruptions import list_incidents
from cxp.analytics.service.health import health_frames, health_objects, score_inputs
from cxp.analytics.service.touchpoints import get_touchpoints
from cxp.analytics.service.voice import get_voice

# Concerns are ordered by rank (lower first), then kept in the order found.
RANK_HIGH, RANK_TOUCHPOINT, RANK_MEDIUM, RANK_INCIDENT, RANK_LOW = 0, 1, 2, 3, 4
AT_RISK_SCORE = 50
MIN_TOUCHPOINT_USES = 30


def _no_answer(window: Window, message: str) -> FleetReport:
    return FleetReport(
        window=window,
        devices=0,
        fleet_score=None,
        fleet_band=None,
        fleet_arrow=None,
        fleet_delta=None,
        products=(),
        band_shares={},
        nps=None,
        concerns=(Concern(severity="high", area="data", message=message),),
        at_risk_devices=0,
    )


def _health_concerns(lines: tuple[ProductHealthLine, ...]) -> list[tuple[int, Concern]]:
    """Red or amber products, falling scores, and the weakest component of green products."""
    concerns: list[tuple[int, Concern]] = []
    for line in lines:
        area = f"health {line.product_id}"
        if line.band in ("red", "amber"):
            drags = f", dragged down by {', '.join(line.top_negative_drivers)}" if line.top_negative_drivers else ""
            severity = "high" if line.band == "red" else "medium"
            message = f"score {line.score:.0f} ({line.band}){drags}"
            rank = RANK_HIGH if severity == "high" else RANK_MEDIUM
            concerns.append((rank, Concern(severity=severity, area=area, message=message)))
        if line.arrow == "down" and line.delta is not None:
            message = f"score fell {line.delta:+.1f} points vs the previous week"
            concerns.append((RANK_MEDIUM, Concern(severity="medium", area=area, message=message)))
        if line.top_negative_drivers and line.band == "green":
            weakest = line.top_negative_drivers[0]
            value = line.components.get(weakest)
            message = f"{weakest} is its weakest component vs other products" + (
                f" ({value:.0f})" if value is not None else ""
            )
            concerns.append((RANK_LOW, Concern(severity="low", area=area, message=message)))
    return concerns


def _touchpoint_concerns(report: TouchpointReport) -> list[tuple[int, Concern]]:
    """The three touchpoints with the lowest upper success bound, when they need attention."""
    ranked = sorted(
        (t for t in report.touchpoints if t.success_ci_high is not None and t.uses >= MIN_TOUCHPOINT_USES),
        key=lambda t: t.success_ci_high or 1.0,
    )
    concerns: list[tuple[int, Concern]] = []
    for t in ranked[:3]:
        if t.quadrant == "concentrate here" or (t.success_rate is not None and t.success_rate < 0.9):
            message = (
                f"success {t.success_rate:.0%} on {t.uses:,} uses, latency ×"
                f"{(t.latency_vs_target or 0):.1f} of target; IPA: {t.quadrant}"
            )
            severity = "high" if t.quadrant == "concentrate here" else "medium"
            area = f"touchpoint {t.product_id}/{t.touchpoint}"
            concerns.append((RANK_TOUCHPOINT, Concern(severity=severity, area=area, message=message)))
    return concerns


def _incident_concerns(incidents: tuple[Disruption, ...]) -> list[tuple[int, Concern]]:
    """The two incidents that hit the most devices."""
    concerns: list[tuple[int, Concern]] = []
    for incident in sorted(incidents, key=lambda i: -i.devices_affected)[:2]:
        recovery = (
            f", median recovery {incident.median_recovery_s / 60:.0f} min"
            if incident.median_recovery_s is not None
            else ""
        )
        message = (
            f"{incident.code} on {incident.start:%Y-%m-%d %H:%M}, {incident.devices_affected} devices"
            f" ({(incident.share_of_product or 0):.0%}){recovery}"
        )
        area = f"incident {incident.product_id}/{incident.touchpoint}"
        concerns.append((RANK_INCIDENT, Concern(severity="medium", area=area, message=message)))
    return concerns


def _churn_concerns(risk: ChurnRiskSummary) -> tuple[list[tuple[int, Concern]], int]:
    """Devices at risk ≥ 50, as one concern, and their count."""
    if not risk.at_risk or risk.top is None:
        return [], 0
    share = risk.at_risk / max(risk.ranked, 1)
    message = (
        f"{risk.at_risk} devices ({share:.0%}) at risk ≥ {AT_RISK_SCORE}, e.g."
        f" {risk.top.entity_id}: {risk.top.reasons}"
    )
    many = share >= 0.05
    concern = Concern(severity="medium" if many else "low", area="churn risk", message=message)
    return [(RANK_MEDIUM if many else RANK_LOW, concern)], risk.at_risk


@maps_numeric_errors
@shared_reads()  # its parts ask for the same inputs (answers, usage, errors): read and fitted once
def get_fleet_report(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    weeks: int = 4,
    config: HealthConfig | None = None,
    max_concerns: int = 6,
) -> FleetReport:
    """A short fleet health summary over the `weeks` weeks up to `query.end` (`query.start` is not used): fleet
    and product scores with trend and drags, NPS, and the top concerns (low or falling health, failing
    touchpoints to concentrate on, incidents and spikes, churn risk)."""
    config = config or HealthConfig()
    window = resolve_window(conn, query=query.ending(query.end), default_days=7 * weeks)
    if window is None:
        return _no_answer(empty_window(), "nothing stored yet")
    scoped = query.ending(window.end)
    days = max(28, 7 * weeks)
    # The parts read and compute apart: while the database answers one, Python scores another. Churn risk reads
    # the most on its own: on a second connection when the caller lends one (the API does), it no longer queues
    # behind the others' statements (fleet report at 10,000 devices ~10 % faster on two cores).
    with own_connection(conn) as churn_conn:
        parts = concurrently(  # the longest first
            churn=lambda: get_churn_risk_summary(conn=churn_conn, query=scoped, threshold=AT_RISK_SCORE),
            health=lambda: health_frames(conn=conn, query=scoped, level="device", weeks=weeks),
            touchpoints=lambda: get_touchpoints(conn=conn, query=scoped, days=days, outcome_models=False),
            incidents=lambda: list_incidents(conn=conn, query=scoped, days=min(14, 7 * weeks)),
            voice=lambda: get_voice(conn=conn, query=scoped, by=("product",), days=days),
        )
    frame, health_window = parts["health"]
    if frame.empty or health_window is None:
        return _no_answer(window, "no devices in scope")
    fleet = health_objects("fleet", aggregate_devices(device_rows=frame, level="fleet"), config)
    products = health_objects("product", aggregate_devices(device_rows=frame, level="product"), config)
    latest_period = frame["period"] == frame["period"].max()
    # Only each device's band of the last week: its score alone, without drivers or trend.
    latest = score_values(frame=score_inputs(frame[latest_period]), config=config)
    bands = [b for b in band_values(scores=latest, config=config).tolist() if b]
    band_shares = {b: bands.count(b) / len(bands) for b in ("green", "amber", "red")} if bands else {}
    fleet_latest = fleet[-1] if fleet else None
    voice = parts["voice"]
    nps_by_product = {g.key["product"]: g.nps for g in voice.groups}
    latest_products = [s for s in products if s.period_start == max(p.period_start for p in products)]
    lines = tuple(
        ProductHealthLine(
            product_id=p.entity_id,
            devices=p.devices,
            score=p.score,
            band=p.band,
            arrow=p.arrow,
            delta=p.delta,
            components=p.components,
            top_negative_drivers=p.top_negative_drivers,
            nps=nps_by_product.get(p.entity_id),
        )
        for p in sorted(latest_products, key=lambda p: p.score if p.score is not None else -1)
    )
    concerns = _health_concerns(lines)
    concerns += _touchpoint_concerns(parts["touchpoints"])
    concerns += _incident_concerns(parts["incidents"])
    churn, at_risk_devices = _churn_concerns(parts["churn"])
    concerns += churn
    ordered = tuple(c for _, c in sorted(concerns, key=lambda ranked: ranked[0]))[:max_concerns]
    return FleetReport(
        window=Window(start=health_window.start, end=health_window.end, as_of=health_window.as_of),
        devices=len(latest),
        fleet_score=fleet_latest.score if fleet_latest else None,
        fleet_band=fleet_latest.band if fleet_latest else None,
        fleet_arrow=fleet_latest.arrow if fleet_latest else None,
        fleet_delta=fleet_latest.delta if fleet_latest else None,
        products=lines,
        band_shares=band_shares,
        nps=voice.overall.nps,
        concerns=ordered,
        at_risk_devices=at_risk_devices,
    )

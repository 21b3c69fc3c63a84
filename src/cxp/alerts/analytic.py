"""Rules judged by the analytics services (incident, health, churn, voice), on a cadence rather than every pass.

Each reads a bounded period ending at the pass's `now` (two days for incidents, the last two whole ISO weeks for
health, the last two `period_days` periods for voice, the churn ranking as of yesterday), never all history.
Rules that differ only in product / touchpoint scope and thresholds share one analytics call per pass (`cache`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import psycopg

from cxp.alerts.core.conditions import Verdict, health_verdict, voice_verdict
from cxp.alerts.core.rules import ChurnParams, HealthParams, IncidentParams, Rule, Scope, VoiceParams
from cxp.analytics import service as analytics
from cxp.analytics.models import HealthReport, HealthScore, Measure, VoiceGroup
from cxp.analytics.query import AnalyticsQuery

INCIDENT_DAYS = 2  # incidents that started yesterday or today (the detector's own baseline reaches 28 days back)


def _query(scope: Scope, *, start: date | None = None, end: date | None = None, product: bool = True) -> AnalyticsQuery:
    return AnalyticsQuery(
        product=scope.product_id if product else None,
        segment=scope.segment,
        account=scope.account_id,
        device=scope.device_id,
        start=start,
        end=end,
    )


def _memo(cache: dict, key: tuple, compute):  # noqa: ANN001, ANN202 - any analytics call
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def incident(
    conn: psycopg.Connection, rule: Rule, p: IncidentParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """Open incidents of the detector per product × touchpoint × error code (entity `product/touchpoint/code`).

    Rules scoped by product / touchpoint share one detector run over every device (per `alpha`): detection is
    per product, so the product's incidents are the same; each rule applies its own min_devices / min_share.
    """
    cache = {} if cache is None else cache
    s = rule.scope
    shared = s.account_id is None and s.segment is None and s.device_id is None
    end = now.date()
    query = _query(s, start=end - timedelta(days=INCIDENT_DAYS - 1), end=end, product=not shared)
    report = _memo(
        cache,
        ("incident", query, p.alpha),
        lambda: analytics.get_disruptions(
            conn=conn, query=query, days=INCIDENT_DAYS, min_devices=1, min_share=0.0, alpha=p.alpha
        ),
    )
    out: dict[str, Verdict] = {}
    for d in sorted(report.incidents, key=lambda d: d.start):
        if (
            (s.product_id is not None and d.product_id != s.product_id)
            or (s.touchpoint is not None and d.touchpoint != s.touchpoint)
            or d.devices_affected < p.min_devices
            or d.share_of_product < p.min_share
            or not d.open
        ):
            continue
        out[f"{d.product_id}/{d.touchpoint}/{d.code}"] = Verdict(
            True,
            {
                "code": d.code,
                "start": d.start.isoformat(),
                "devices_affected": d.devices_affected,
                "share_of_product": round(d.share_of_product, 4),
                "episodes": d.episodes,
                "errors": d.errors,
                "recovered_episodes": d.recovered_episodes,
            },
            product_id=d.product_id,
            touchpoint=d.touchpoint,
        )
    return out


def last_whole_weeks(now: datetime) -> tuple[date, date, date]:
    """(previous week's Monday, last whole week's Monday, last whole week's Sunday) before `now`'s week."""
    monday = now.date() - timedelta(days=now.date().weekday())
    return monday - timedelta(days=14), monday - timedelta(days=7), monday - timedelta(days=1)


def health(
    conn: psycopg.Connection, rule: Rule, p: HealthParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """The last whole week's health score of each product / segment / account (or the fleet) in scope against the
    rule's band, weekly drop and band change."""
    cache = {} if cache is None else cache
    s = rule.scope
    previous_start, last_start, last_end = last_whole_weeks(now)
    query = _query(s, start=previous_start, end=last_end)
    reports: dict[str, HealthReport] = {}
    if p.level == "segment":
        segments = (
            [s.segment]
            if s.segment is not None
            else _memo(
                cache,
                ("segments",),
                lambda: [
                    r[0]
                    for r in (
                        conn.execute(
                            "SELECT DISTINCT segment FROM accounts WHERE segment IS NOT NULL ORDER BY 1"
                        ).fetchall()
                    )
                ],
            )
        )
        for segment in segments:
            q = replace(query, segment=segment)
            reports[segment] = _memo(
                cache,
                ("health", q, "fleet"),
                lambda q=q: analytics.get_health(conn=conn, query=q, level="fleet", grain="week"),
            )
    else:
        reports[""] = _memo(
            cache,
            ("health", query, p.level),
            lambda: analytics.get_health(conn=conn, query=query, level=p.level, grain="week"),
        )
    out: dict[str, Verdict] = {}
    for name, report in reports.items():
        by_entity: dict[str, dict[date, HealthScore]] = {}  # one pass, not a scan of every score per entity
        for sc in report.scores:
            by_entity.setdefault(sc.entity_id, {})[sc.period_start] = sc
        for entity, weeks in by_entity.items():
            latest, previous = weeks.get(last_start), weeks.get(previous_start)
            if latest is None:
                continue
            verdict = health_verdict(
                p,
                score=latest.score,
                previous_score=previous.score if previous else None,
                band=latest.band,
                previous_band=previous.band if previous else None,
            )
            if verdict.firing:
                label = name or entity
                product = label if p.level == "product" else s.product_id
                out[label] = replace(
                    verdict, values=verdict.values | {"week": last_start.isoformat()}, product_id=product
                )
    return out


def churn(
    conn: psycopg.Connection, rule: Rule, p: ChurnParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """The devices in the top `top_n` of the churn-risk ranking as of yesterday, with a risk of at least `min_risk`."""
    cache = {} if cache is None else cache
    query = _query(rule.scope, end=now.date() - timedelta(days=1))
    ranking = _memo(
        cache,
        ("churn", query, p.top_n),
        lambda: analytics.list_churn_risk(conn=conn, query=query, level="device", limit=p.top_n),
    )
    return {
        e.entity_id: Verdict(
            True,
            {
                "rank": e.rank,
                "risk_score": e.risk_score,
                "product_id": e.product_id,
                "reasons": e.reasons,
                "top_n": p.top_n,
            },
        )
        for e in ranking.entries
        if e.risk_score is not None and e.risk_score >= p.min_risk
    }


def _measures(groups: tuple[VoiceGroup, ...], overall: VoiceGroup, by: str, measure: str) -> dict[str, Measure]:
    if by == "fleet":
        m = getattr(overall, measure)
        return {"fleet": m} if m is not None else {}
    return {g.key[by]: getattr(g, measure) for g in groups if getattr(g, measure) is not None}


def voice(
    conn: psycopg.Connection, rule: Rule, p: VoiceParams, now: datetime, cache: dict | None = None
) -> dict[str, Verdict]:
    """NPS / CSAT of the last `period_days` full days against the period before, per product, segment or fleet."""
    cache = {} if cache is None else cache
    end = now.date() - timedelta(days=1)
    periods = []
    for back in (0, 1):
        period_end = end - timedelta(days=back * p.period_days)
        q = _query(rule.scope, start=period_end - timedelta(days=p.period_days - 1), end=period_end)
        by = ("product",) if p.by == "fleet" else (p.by,)
        report = _memo(
            cache, ("voice", q, by), lambda q=q, by=by: analytics.get_voice(conn=conn, query=q, by=by, min_n=2)
        )
        periods.append(_measures(report.groups, report.overall, p.by, p.measure))
    current, previous = periods
    out: dict[str, Verdict] = {}
    for entity in sorted(current.keys() & previous.keys()):
        cur, prev = current[entity], previous[entity]
        verdict = voice_verdict(
            p,
            value=cur.value,
            margin=cur.margin,
            n=cur.n,
            previous_value=prev.value,
            previous_margin=prev.margin,
            previous_n=prev.n,
        )
        if verdict.firing:
            product = entity if p.by == "product" else rule.scope.product_id
            out[entity] = replace(
                verdict,
                values=verdict.values | {"period_end": end.isoformat(), "period_days": p.period_days},
                product_id=product,
            )
    return out


CONDITIONS = {"incident": incident, "health": health, "churn": churn, "voice": voice}

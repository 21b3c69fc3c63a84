"""Journey map: journey stages × touchpoints with reach, performance and satisfaction, pain points and drop-off.

Composes the services that already measure each part: touchpoints (reach, success, performance, IPA quadrant),
voice by touchpoint (CSAT), the lifecycle funnel (drop-off between post-purchase stages) and disruptions
(incidents as pain points).
"""

from __future__ import annotations

from dataclasses import replace

import psycopg

from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models_measures import JourneyMap, JourneyMapCell, JourneyMapStage
from cxp.analytics.queries._base import concurrently, shared_reads
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import empty_window
from cxp.analytics.service.disruptions import list_incidents
from cxp.analytics.service.journey import get_journey
from cxp.analytics.service.segments import get_segments
from cxp.analytics.service.touchpoints import get_touchpoints
from cxp.analytics.service.voice import get_voice

JOURNEY = ("pre_purchase", "purchase", "post_purchase")
PAIN_SUCCESS = 0.9  # a touchpoint failing more than 1 use in 10 is a pain point, as in the fleet report

DEFINITIONS = {
    "reach": "share of the scope's devices that used the touchpoint in the window",
    "performance": "the touchpoint report's performance (success and latency against target, 0–100)",
    "csat": "CSAT top-2-box of the feedback tied to the touchpoint (n beside it)",
    "pain": f"IPA quadrant 'concentrate here' or success below {PAIN_SUCCESS:.0%}; incidents listed per stage",
    "drop_off_to_next": "share of the devices at a lifecycle stage that did not reach the next one (funnel of the"
    " devices that came online in the window); pre-purchase prospects are not devices, so no drop-off there",
}


def _persona_scope(
    conn: psycopg.Connection, *, query: AnalyticsQuery, days: int, persona: str
) -> tuple[AnalyticsQuery | None, str | None]:
    """The scope narrowed to the devices of one persona (the personas of the same scope and window), or None and
    why when the persona is unknown or empty."""
    segments = get_segments(conn=conn, query=query, days=days, with_health=False)
    members = frozenset(d for d, name in segments.assignments.items() if name == persona)
    if not members:
        known = ", ".join(sorted({s.name for s in segments.segments})) or "none"
        return None, f"not enough data: no device of persona {persona!r} in this scope (personas: {known})"
    return replace(query, devices=members), None


@maps_numeric_errors
@shared_reads()  # its parts ask for the same inputs (devices, windows, errors): read once
def get_journey_map(
    *, conn: psycopg.Connection, query: AnalyticsQuery = ALL_DEVICES, days: int = 56, persona: str | None = None
) -> JourneyMap:
    """The journey map of the scope: one column per journey stage (post-purchase per lifecycle stage), one row
    per touchpoint met there, each with reach, performance and satisfaction, the stage's pain points and the
    drop-off to the next stage. `persona` (a name from the personas service over the same scope and window)
    narrows the scope to that persona's devices."""
    if persona is not None:
        narrowed, reason = _persona_scope(conn, query=query, days=days, persona=persona)
        if narrowed is None:
            return JourneyMap(empty_window(), (), (), DEFINITIONS, reason, persona=persona)
        query = narrowed
    parts = concurrently(  # while the database answers one part, Python computes another
        touchpoints=lambda: get_touchpoints(conn=conn, query=query, days=days, outcome_models=False),
        voice=lambda: get_voice(conn=conn, query=query, by=("product", "touchpoint"), days=days),
        incidents=lambda: list_incidents(conn=conn, query=query, days=days),
        funnel=lambda: get_journey(conn=conn, query=query, days=days),
    )
    touchpoints, voice, incidents, funnel = parts["touchpoints"], parts["voice"], parts["incidents"], parts["funnel"]
    if not touchpoints.touchpoints:
        return JourneyMap(
            touchpoints.window or empty_window(), (), (), DEFINITIONS, "not enough data: no touchpoints", persona
        )
    csat = {(g.key.get("product"), g.key.get("touchpoint")): g.csat for g in voice.groups}

    cells = []
    for t in touchpoints.touchpoints:
        measure = csat.get((t.product_id, t.touchpoint))
        pain = t.quadrant == "concentrate here" or (t.success_rate is not None and t.success_rate < PAIN_SUCCESS)
        cells.append(
            JourneyMapCell(
                product_id=t.product_id,
                stage=t.journey_stage,
                touchpoint=t.touchpoint,
                owner=t.owner,
                devices=t.devices,
                reach=t.reach,
                success_rate=t.success_rate,
                performance=t.performance,
                csat=measure.value if measure else None,
                csat_n=measure.n if measure else 0,
                quadrant=t.quadrant,
                pain=pain,
            )
        )
    cells.sort(key=lambda c: (JOURNEY.index(c.stage) if c.stage in JOURNEY else 9, c.product_id, -(c.reach or 0)))

    stages = []
    for stage in JOURNEY:
        pains = [f"{c.product_id}/{c.touchpoint}" for c in cells if c.stage == stage and c.pain]
        stage_tps = {(c.product_id, c.touchpoint) for c in cells if c.stage == stage}
        pains += [
            f"incident {i.product_id}/{i.touchpoint} {i.code} from {i.start:%Y-%m-%d} ({i.devices_affected} devices)"
            for i in incidents
            if (i.product_id, i.touchpoint) in stage_tps
        ]
        if stage != "post_purchase":
            stages.append(
                JourneyMapStage(stage, None, None, None, tuple(pains), note="no funnel: prospects are not devices")
            )
            continue
        counts = list(funnel.stages)
        for k, s in enumerate(counts):
            following = counts[k + 1] if k + 1 < len(counts) else None
            drop = None
            if following is not None and following.conversion_from_previous is not None:
                drop = 1.0 - following.conversion_from_previous
            stages.append(
                JourneyMapStage(
                    stage,
                    s.stage,
                    s.devices,
                    drop,
                    tuple(pains) if k == 0 else (),
                    note=f"churn rate {funnel.churn_rate:.0%} as the exit"
                    if following is None and funnel.churn_rate is not None
                    else None,
                )
            )
        if not counts:
            stages.append(JourneyMapStage(stage, None, None, None, tuple(pains), note=funnel.reason))
    return JourneyMap(touchpoints.window, tuple(stages), tuple(cells), DEFINITIONS, persona=persona)

"""Personas: one k-means fit per k on per-device features relative to each product's norm, named and sized."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import psycopg

from cxp.analytics.core import personas as core_personas
from cxp.analytics.core import segments as core_segments
from cxp.analytics.core._frames import finite_or_none
from cxp.analytics.core.health import HealthConfig
from cxp.analytics.errors import maps_numeric_errors
from cxp.analytics.models import PersonaSegment, SegmentReport, Window
from cxp.analytics.queries._base import concurrently, own_connection, shared_reads
from cxp.analytics.queries.registry import devices
from cxp.analytics.queries.usage import last_use_before, usage_features
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service._common import empty_window, resolve_window
from cxp.analytics.service.health import device_scores
from cxp.analytics.service.outcomes import device_satisfaction

# Silhouette picks k = 2 on the test fleet (power users stand far apart and hide the rest); the variance ratio
# finds the simulated personas (docs/analytics.md, tests/analytics/test_service_segments.py).
K_METHOD: core_segments.KMethod = "calinski_harabasz"


def persona_features(
    conn: psycopg.Connection, *, scope: AnalyticsQuery, window: Window, min_history_days: int = 21
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per device: the persona features (core PERSONA_FEATURES) and why the devices left out are left out."""
    scoped = devices(conn, scope=scope)
    if scoped.empty:
        return pd.DataFrame(columns=["entity_id", *core_personas.PERSONA_FEATURES, "product_id"]), {}
    read = concurrently(  # while the database answers one part, Python computes another
        usage=lambda: usage_features(conn, scope=scope, start=window.start, end=window.end),
        last=lambda: last_use_before(conn, scope=scope, end=window.end),
        satisfaction=lambda: device_satisfaction(conn, scope=scope, window=window),
    )
    frame = scoped.merge(read["usage"], on="device_key", how="left").merge(read["last"], on="device_key", how="left")
    return core_personas.persona_features(
        devices=frame,
        satisfaction=read["satisfaction"],
        start=window.start,
        end=window.end,
        min_history_days=min_history_days,
    )


def _segment_report(
    window: Window,
    segmentation: core_segments.Segmentation | None = None,
    *,
    features: tuple[str, ...] | None = None,
    segments: tuple[PersonaSegment, ...] = (),
    assignments: dict[str, str] | None = None,
    unsegmented: dict[str, str] | None = None,
    reason: str | None = None,
) -> SegmentReport:
    if features is None:
        features = tuple(segmentation.features) if segmentation else ()
    return SegmentReport(
        window=window,
        k=segmentation.k if segmentation else None,
        k_method=core_segments.K_METHODS[K_METHOD],
        k_scores=segmentation.k_scores if segmentation else {},
        features=features,
        segments=segments,
        assignments=assignments or {},
        unsegmented=unsegmented or {},
        reason=reason,
    )


@maps_numeric_errors
@shared_reads()  # the features and the health scores read the same devices
def get_segments(
    *,
    conn: psycopg.Connection,
    query: AnalyticsQuery = ALL_DEVICES,
    days: int = 56,
    k_range: Sequence[int] = range(2, 9),
    min_history_days: int = 21,
    with_health: bool = True,
) -> SegmentReport:
    """Personas: k-means on standardised per-device features relative to each product's norm, fitted once per k
    in `k_range`, k by the highest Calinski–Harabasz index, each persona named and described with its size and
    health.

    Devices with fewer than `min_history_days` days in the window, or no use, are not segmented (listed with why).
    """
    window = resolve_window(conn, query=query, default_days=days)
    if window is None:
        return _segment_report(empty_window(), reason="not enough data: nothing stored")
    # the health scores do not depend on the personas: computed beside them, on a lent connection if there is one
    with own_connection(conn) as apart:
        read = concurrently(
            features=lambda: persona_features(conn, scope=query, window=window, min_history_days=min_history_days),
            scores=lambda: device_scores(conn=apart, query=query.ending(window.end), weeks=1) if with_health else None,
        )
    features, excluded = read["features"]
    columns = list(core_personas.PERSONA_FEATURES)
    segmentation = core_segments.segment_entities(
        features=features[["entity_id", *columns]], k_range=k_range, k_method=K_METHOD
    )
    if segmentation.k is None:
        return _segment_report(window, segmentation, unsegmented=excluded, reason=segmentation.reason)
    labels = segmentation.labels.assign(product_id=features["product_id"].to_numpy())
    health: pd.Series | None = None
    if with_health:
        # each device's last week, as get_health's latest
        latest = read["scores"].drop_duplicates("device_id", keep="last")
        health = pd.Series(latest["score"].to_numpy(), index=latest["device_id"].to_numpy(), dtype=object)
    names = core_personas.persona_names(
        centroids_z={c.cluster: {k: float(v) for k, v in c.centroid_z.items()} for c in segmentation.clusters}
    )
    assignments = {str(e): names[int(k)] for e, k in zip(labels["entity_id"], labels["cluster"], strict=True)}
    red_below = HealthConfig().red_below
    segments = []
    for cluster in segmentation.clusters:
        members = labels[labels["cluster"] == cluster.cluster]
        profile = core_personas.persona_profile(centroid=cluster.centroid)
        member_scores = (
            []
            if health is None
            else [float(v) for v in health.reindex(members["entity_id"]).tolist() if finite_or_none(v) is not None]
        )
        segments.append(
            PersonaSegment(
                cluster=int(cluster.cluster),
                name=names[cluster.cluster],
                description=core_personas.persona_description(profile=profile),
                devices=int(cluster.size),
                share=float(cluster.share),
                profile=profile,
                profile_z={k: float(v) for k, v in cluster.centroid_z.items()},
                mean_health=float(np.mean(member_scores)) if member_scores else None,
                red_share=float(np.mean([v < red_below for v in member_scores])) if member_scores else None,
                products={str(k): int(v) for k, v in members["product_id"].value_counts().items()},
            )
        )
    segments.sort(key=lambda s: -s.devices)
    return _segment_report(
        window,
        segmentation,
        features=tuple(columns),
        segments=tuple(segments),
        assignments=assignments,
        unsegmented=excluded,
    )

"""Personas and churn risk recovered from a simulated fleet (adjusted Rand index, ROC AUC)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from cxp.analytics import service
from cxp.analytics.core import early_warning as core_warning
from cxp.analytics.core.segments import K_METHODS
from cxp.analytics.core.stats import usage_trend
from cxp.analytics.models import SegmentReport
from cxp.analytics.queries.registry import devices
from cxp.analytics.queries.usage import daily_usage
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery
from cxp.analytics.service import churn as churn_service
from cxp.store.db import connect
from tests.analytics.helpers import assert_no_nan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def segments(fleet_conn) -> SegmentReport:
    """Personas over the whole simulated period."""
    return service.get_segments(conn=fleet_conn, days=10_000)


def test_personas_are_recovered(segments: SegmentReport, loaded_fleet) -> None:
    labels = pd.Series(segments.assignments)
    truth = loaded_fleet.truth.loc[labels.index]
    # An experience churner's usage follows what it lived (it fades after failures), no longer its persona: the
    # persona truth describes the devices whose behaviour their persona set, so the proof is made on those.
    lived_persona = (truth["churn_cause"] != "experience").to_numpy()
    ari_all = adjusted_rand_score(truth["persona"], labels)
    ari = adjusted_rand_score(truth["persona"][lived_persona], labels[lived_persona])
    print(
        f"persona ARI {ari:.3f} over {lived_persona.sum()} devices without experience churners"
        f" ({ari_all:.3f} over all {len(labels)}), k={segments.k}"
    )
    assert ari >= 0.6 and ari_all >= 0.5
    # devices too new to segment are reported, not guessed; most devices are segmented
    assert len(labels) + len(segments.unsegmented) == len(loaded_fleet.truth)
    assert len(labels) >= 0.7 * len(loaded_fleet.truth)


def test_segments_are_named_sized_and_healthy(segments: SegmentReport) -> None:
    assert_no_nan(segments)
    assert segments.k == len(segments.segments) and 3 <= segments.k <= 8
    assert segments.k_scores[segments.k] == max(segments.k_scores.values())
    assert segments.k_method == K_METHODS["calinski_harabasz"]  # the report names the index k was chosen by
    names = [s.name for s in segments.segments]
    assert len(set(names)) == len(names)
    assert sum(s.devices for s in segments.segments) == len(segments.assignments)
    assert sum(s.share for s in segments.segments) == pytest.approx(1.0)
    power = next(s for s in segments.segments if "power" in s.name.lower())
    assert power.profile["uses_per_active_day"] > 1.5  # power users use the product ~1.8× as intensely
    for s in segments.segments:
        assert s.description and s.mean_health is not None and 0 <= s.red_share <= 1
    assert all(r.startswith(("too new", "no use")) for r in segments.unsegmented.values())


def test_churners_rank_at_the_top_of_churn_risk(fleet_conn, loaded_fleet) -> None:
    truth = loaded_fleet.truth["churns"]
    known = service.list_churn_risk(conn=fleet_conn, include_churned=True)
    scores = pd.Series({e.entity_id: e.risk_score for e in known.entries})
    auc_all = roc_auc_score(truth.loc[scores.index], scores)
    # without the devices that told us they left: the silent churners must still be found
    hidden = service.list_churn_risk(conn=fleet_conn)
    h = pd.Series({e.entity_id: e.risk_score for e in hidden.entries})
    auc_hidden = roc_auc_score(truth.loc[h.index], h)
    print(f"churn ROC AUC {auc_all:.3f} (all devices), {auc_hidden:.3f} (without cancelled/returned)")
    assert auc_all >= 0.8 and auc_hidden >= 0.8
    assert len(scores) == len(truth) and len(h) < len(truth)
    assert_no_nan(hidden)
    for e in hidden.entries[:10]:
        assert e.reasons and e.reasons != "no warning signs" and e.status in ("active", "inactive")
    assert [e.rank for e in hidden.entries] == list(range(1, len(hidden.entries) + 1))


def test_churn_risk_for_accounts(fleet_conn) -> None:
    accounts = service.list_churn_risk(conn=fleet_conn, level="account", limit=20)
    assert len(accounts.entries) == 20 and accounts.level == "account"
    risks = [e.risk_score for e in accounts.entries]
    assert risks == sorted(risks, reverse=True)
    assert all(e.entity_id.startswith("acct-") for e in accounts.entries)


def test_personas_of_a_product_whose_touchpoint_list_was_emptied(fleet_settings, loaded_fleet) -> None:
    # Issue 11: emptying a product's catalogue made personas fail with KeyError 'extra_feature_share' (a 500).
    # The fleet database is shared: the catalogue is emptied inside a transaction that is rolled back.
    with connect(fleet_settings.db, autocommit=False) as conn:
        product = conn.execute("SELECT product_id FROM devices GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
        conn.execute("DELETE FROM touchpoints WHERE product_id = %s", (product,))
        try:
            for query in (AnalyticsQuery(product=product), ALL_DEVICES):
                report = service.get_segments(conn=conn, query=query, days=10_000)
                assert_no_nan(report)
                assert report.assignments or report.reason
                for s in report.segments:
                    assert set(s.profile) <= set(report.features) and s.name
        finally:
            conn.rollback()


@pytest.mark.parametrize("threshold", [0.0, 20.0, 50.0, 101.0])
def test_churn_risk_summary_counts_what_the_ranking_lists(fleet_conn, threshold) -> None:
    ranking = service.list_churn_risk(conn=fleet_conn)
    summary = service.get_churn_risk_summary(conn=fleet_conn, threshold=threshold)
    at_risk = [e for e in ranking.entries if e.risk_score is not None and e.risk_score >= threshold]
    assert summary.ranked == len(ranking.entries) > 0
    assert summary.at_risk == len(at_risk)
    assert summary.top == (at_risk[0] if at_risk else None)


@pytest.mark.parametrize("level", ["device", "account"])
def test_churn_parts_from_per_device_sums_equal_those_from_daily_rows(fleet_conn, level) -> None:
    # The risk table reads one row of sums per device; the trend, usage drop and failure rate computed the plain way,
    # from every active device-day of the nine weeks, give the same numbers.
    table, _, ranked, window, _ = churn_service._default_risk_table(fleet_conn, query=AnalyticsQuery(), level=level)
    as_of, key = window.end, ("account_id" if level == "account" else "device_id")
    registry = devices(fleet_conn, scope=AnalyticsQuery())
    daily = daily_usage(fleet_conn, scope=AnalyticsQuery(), start=as_of - timedelta(days=62), end=as_of, core_uses=True)
    daily = daily.merge(registry[["device_key", key]], on="device_key").rename(columns={key: "entity_id"})
    if level == "account":
        daily["entity_id"] = daily["entity_id"].fillna("(no account)")
    by_day = daily.groupby(["entity_id", "day"], as_index=False)[["uses", "errors", "core_uses"]].sum()
    ids = table["entity_id"]
    assert len(ids) > 50 and (table["drop_risk"] > 0.5).any() and (table["failure_risk"] > 0).any()
    drop = core_warning.usage_drop(usage=by_day, entities=ids, as_of=as_of)
    np.testing.assert_array_equal(table["drop_evidence"].to_numpy(float), drop["drop_evidence"].to_numpy(float))
    np.testing.assert_array_equal(table["expected_uses"].to_numpy(float), drop["expected_uses"].to_numpy(float))
    recent = by_day[pd.to_datetime(by_day["day"]) > pd.Timestamp(as_of - timedelta(days=28))]
    group = ranked.set_index("entity_id")["product_id"].astype(object).fillna("(mixed)")
    failures = core_warning.failure_rate_risk(failures=recent.groupby("entity_id")["errors"].sum(),
                                              uses=recent.groupby("entity_id")["uses"].sum(), group=group, entities=ids)
    np.testing.assert_array_equal(table["failure_rate"].to_numpy(float), failures["failure_rate"].to_numpy(float))
    core = by_day[(by_day["core_uses"] > 0).to_numpy()].rename(columns={"core_uses": "trend_uses"})
    trend = usage_trend(usage=core[["entity_id", "day", "trend_uses"]].rename(columns={"trend_uses": "uses"}),
                        as_of=as_of, window_days=28, bucket_days=7, entities=ranked[["entity_id", "activated_on"]])
    slopes = trend.set_index("entity_id")["weekly_change"].reindex(ids).to_numpy(float, na_value=np.nan)
    got = table["weekly_change"].to_numpy(float, na_value=np.nan)
    assert np.isfinite(got).sum() > 50
    np.testing.assert_array_equal(got, slopes)

"""Issue 14: churn early warning ranked as of a date when the future churners are still active, on the truth fleets;
AUC by lead time with 95 % intervals for the fitted model (core churn_model.DEFAULT_MODEL, fitted on seed 11, none of
these), the same model family refitted on one truth fleet and scored on the others, the simulator's own up-front
hazard as an oracle score, and the reasons name what the simulator's hazard says drove an experience churner."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from cxp.analytics import service
from cxp.analytics.core import churn_model
from cxp.analytics.query import AnalyticsQuery
from cxp.device_sim import build_fleet
from cxp.tools.truth import (
    auc_with_ci,
    churn_truth,
    churned_within,
    last_week_use_share,
    prior_churn_oracle,
    still_active,
)
from tests.analytics.helpers import assert_no_nan

pytestmark = pytest.mark.integration

AS_OF_DAYS = (14, 21, 28)  # days after the fleet start the ranking is made
LEADS = (7, 14, 28)
FIT_DAYS = (10, 14, 18, 21, 24, 28, 32)  # as-of days a refitted model learns from (14-day outcomes inside 42 days)
DRIVER_LABELS = {"incidents": "incident", "support": "support contact"}


def _cut(start, days: int) -> tuple[object, pd.Timestamp]:
    as_of = (start + timedelta(days=days)).date()
    return as_of, pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def rankings(truth_conns, truth_fleets) -> list[dict[str, object]]:
    """Per seed and as-of day: the ranking made then and the planted truth of the devices still active then."""
    out = []
    for seed, conn in truth_conns.items():
        truth = churn_truth(conn)
        start = truth_fleets[seed].fleet.params["start"]
        for days in AS_OF_DAYS:
            as_of, cut = _cut(start, days)
            report = service.list_churn_risk(conn=conn, query=AnalyticsQuery(end=as_of))
            assert_no_nan(report)
            scores = pd.Series({e.entity_id: e.risk_score for e in report.entries})
            entries = {e.entity_id: e for e in report.entries}
            out.append(
                {
                    "seed": seed,
                    "days": days,
                    "cut": cut,
                    "truth": still_active(truth, cut),
                    "all": truth,
                    "scores": scores,
                    "entries": entries,
                }
            )
    return out


def _auc_table(rankings, score_of) -> dict[int, list[float]]:
    aucs: dict[int, list[float]] = {lead: [] for lead in LEADS}
    for r in rankings:
        ids = list(r["truth"].index)
        score = score_of(r, ids)
        line = []
        for lead in LEADS:
            y = churned_within(r["all"], ids, r["cut"], lead)
            a, lo, hi = auc_with_ci(y, score)
            aucs[lead].append(a)
            line.append(f"{lead} d {a:.2f} [{lo:.2f}, {hi:.2f}] ({int(y.sum())} of {len(ids)})")
        print(f"  seed {r['seed']} as of day {r['days']}: " + ", ".join(line))
    return aucs


def test_fitted_model_auc_by_lead_time_for_devices_still_active_when_ranked(rankings) -> None:
    for r in rankings:
        # the future churners are ranked while still active (no cancellation or return before the date)
        assert set(r["truth"].index) <= set(r["scores"].index)
        assert all(r["entries"][i].status in ("active", "inactive") for i in r["truth"].index)
    print("fitted model (DEFAULT_MODEL, trained on seed 11):")
    aucs = _auc_table(rankings, lambda r, ids: r["scores"][ids].to_numpy())
    means = {lead: float(np.mean(v)) for lead, v in aucs.items()}
    late = [a for a, r in zip(aucs[14], rankings, strict=True) if r["days"] >= 21]
    print("mean AUC by lead: " + ", ".join(f"{lead} d {m:.3f}" for lead, m in means.items()))
    print(f"mean AUC at 14 d as of days 21 and 28: {np.mean(late):.3f}")
    # measured (docs/analytics.md); 0.8 at 14 days is reached once 3 weeks of history exist (days 21, 28), not as of
    # day 14, where most 14-day churners still use the product as usual (test_oracle_… below)
    assert means[7] >= 0.75 and means[14] >= 0.74 and np.mean(late) >= 0.79 and min(late) >= 0.72


def test_weighted_score_is_beaten_by_the_fitted_model(truth_conns, truth_fleets, rankings) -> None:
    weighted = {}
    for seed, conn in truth_conns.items():
        start = truth_fleets[seed].fleet.params["start"]
        for days in AS_OF_DAYS:
            as_of, _ = _cut(start, days)
            report = service.list_churn_risk(conn=conn, query=AnalyticsQuery(end=as_of), score="weighted")
            weighted[seed, days] = pd.Series({e.entity_id: e.risk_score for e in report.entries})
    print("weighted mean of the parts (score='weighted'):")
    aucs = _auc_table(rankings, lambda r, ids: weighted[r["seed"], r["days"]][ids].to_numpy())
    fitted = _auc_table(rankings, lambda r, ids: r["scores"][ids].to_numpy())
    print(f"14 d mean: weighted {np.mean(aucs[14]):.3f}, fitted {np.mean(fitted[14]):.3f}")
    assert np.mean(fitted[14]) > np.mean(aucs[14])


def test_refitted_on_one_fleet_ranks_the_other_fleets(truth_conns, truth_fleets) -> None:
    """Out of sample: the model family fitted on one truth fleet's history, scored on the two others."""
    snapshots = {}
    for seed, conn in truth_conns.items():
        truth = churn_truth(conn)
        start = truth_fleets[seed].fleet.params["start"]
        for days in sorted({*FIT_DAYS, *AS_OF_DAYS}):
            as_of, cut = _cut(start, days)
            inputs = service.get_churn_model_inputs(conn=conn, query=AnalyticsQuery(end=as_of)).set_index("entity_id")
            ids = list(still_active(truth, cut).index)
            snapshots[seed, days] = (inputs.loc[ids].reset_index(), churned_within(truth, ids, cut, 14))
    late = []
    for train in truth_conns:
        x = pd.concat([snapshots[train, d][0] for d in FIT_DAYS], ignore_index=True)
        y = np.concatenate([snapshots[train, d][1] for d in FIT_DAYS])
        model = churn_model.fit_churn_model(inputs=x, churned=y, lead_days=14, trained_on=f"seed {train}")
        print(f"fitted on seed {train}: " + ", ".join(f"{k} {v:+.2f}" for k, v in model.as_dict().items()))
        for test in truth_conns:
            if test == train:
                continue
            line = []
            for days in AS_OF_DAYS:
                inputs, labels = snapshots[test, days]
                a, lo, hi = auc_with_ci(labels, churn_model.churn_probability(inputs=inputs, model=model))
                line.append(f"day {days} {a:.2f} [{lo:.2f}, {hi:.2f}]")
                late += [a] if days >= 21 else []
            print(f"  scored on seed {test}, 14 d: " + ", ".join(line))
        assert model.as_dict()["drop"] > 0 and model.as_dict()["satisfaction"] < 0
    print(f"mean AUC at 14 d as of days 21 and 28, out of sample: {np.mean(late):.3f}")
    assert np.mean(late) >= 0.78


def test_oracle_shows_what_is_predictable_14_days_ahead(rankings, truth_fleets) -> None:
    """The simulator's own up-front hazard as the score (all it plants but the draws), and how many 14-day churners
    still used the product as usual in the week before the ranking: what bounds any early warning as of day 14."""
    fleets = {seed: build_fleet(**t.fleet.params) for seed, t in truth_fleets.items()}
    oracle: dict[int, list[float]] = {d: [] for d in AS_OF_DAYS}
    fitted: dict[int, list[float]] = {d: [] for d in AS_OF_DAYS}
    usual: dict[int, list[float]] = {d: [] for d in AS_OF_DAYS}
    for r in rankings:
        ids = list(r["truth"].index)
        y = churned_within(r["all"], ids, r["cut"], 14)
        oracle[r["days"]].append(auc_with_ci(y, prior_churn_oracle(fleets[r["seed"]], ids, r["cut"], 14))[0])
        fitted[r["days"]].append(auc_with_ci(y, r["scores"][ids].to_numpy())[0])
        share = last_week_use_share(r["all"], ids, r["cut"])[y]
        usual[r["days"]].append(float((share >= 0.9).mean()))
    for d in AS_OF_DAYS:
        print(
            f"as of day {d}: oracle AUC 14 d {np.mean(oracle[d]):.2f}, fitted {np.mean(fitted[d]):.2f};"
            f" 14-day churners with ≥ 90 % of their usual use in the last week {np.mean(usual[d]):.0%}"
        )
    # as of day 14 most 14-day churners show nothing yet, and the planted hazard itself ranks them below 0.8
    assert np.mean(usual[14]) >= 0.5 and np.mean(oracle[14]) < 0.8
    assert np.mean(usual[14]) > np.mean(usual[21]) and np.mean(usual[14]) > np.mean(usual[28])


def test_reasons_name_what_drove_an_experience_churner(rankings) -> None:
    named = total = 0
    for r in rankings:
        active = r["truth"]
        decided = pd.to_datetime(active["decided_at"], utc=True)
        # experience churners that took their decision in the week before the ranking: they lived the drivers
        recent = active[
            (active["cause"] == "experience") & (decided < r["cut"]) & (decided >= r["cut"] - pd.Timedelta(7, "D"))
        ]
        for device_id, row in recent.iterrows():
            planted = max(row["drivers"], key=row["drivers"].get)
            label = DRIVER_LABELS.get(planted, planted)
            entry = r["entries"][device_id]
            total += 1
            named += bool(entry.drivers) and label in entry.drivers and label in entry.reasons
    print(f"the planted top driver is named in {named} of {total} experience churners' reasons")
    assert total >= 10 and named >= 0.8 * total

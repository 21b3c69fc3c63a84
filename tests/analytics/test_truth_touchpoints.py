"""Issue 14: the planted Kano classes and importance are recovered from satisfaction answers on several seeds, and
the failing basic touchpoint (brew-c3's descale: rarely used, so unimportant by usage share) is *concentrate here*."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats as sps

from cxp.analytics import service
from cxp.analytics.models import TouchpointReport
from tests.analytics.helpers import assert_no_nan
from tests.fixtures.fleet import TRUTH_ERROR_PRONE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reports(truth_conns) -> dict[int, TouchpointReport]:
    """The touchpoint report of each truth fleet over its whole period."""
    return {seed: service.get_touchpoints(conn=conn, days=10_000) for seed, conn in truth_conns.items()}


@pytest.fixture(scope="module")
def compared(reports, truth_conns) -> dict[int, pd.DataFrame]:
    """Each seed's touchpoints beside their planted class and importance (sim_touchpoint_truth)."""
    out = {}
    for seed, conn in truth_conns.items():
        truth = pd.DataFrame(
            conn.execute(
                "SELECT product_id, touchpoint, kano_class, fail_penalty + success_reward FROM sim_touchpoint_truth"
            ).fetchall(),
            columns=["product_id", "touchpoint", "planted", "planted_importance"],
        )
        found = pd.DataFrame([t.__dict__ for t in reports[seed].touchpoints])
        out[seed] = found.merge(truth, on=["product_id", "touchpoint"], how="left")
    return out


def test_planted_classes_are_recovered_where_the_answers_suffice(compared, reports) -> None:
    for seed, table in compared.items():
        assert_no_nan(reports[seed])
        classified = table[table["classification"].notna()]
        right = (classified["classification"] == classified["planted"]).mean()
        print(
            f"seed {seed}: {len(classified)} of {len(table)} touchpoints classified, {right:.0%} right: "
            + ", ".join(f"{r.touchpoint} {r.classification}/{r.planted}" for r in classified.itertuples())
        )
        assert len(classified) >= 5 and right >= 0.8
        swapped = classified[
            ((classified["classification"] == "basic") & (classified["planted"] == "attractive"))
            | ((classified["classification"] == "attractive") & (classified["planted"] == "basic"))
        ]
        assert swapped.empty, swapped
        assert (classified["n_low"] >= 10).all() and (classified["n_high"] >= 10).all()
        # the others say which answers they lack, never a confident wrong class
        rest = table[table["classification"].isna()]
        assert rest["reason"].str.startswith(("not enough data", "no satisfaction answers")).all()


def test_derived_importance_ranks_touchpoints_like_the_planted_effects(compared) -> None:
    for seed, table in compared.items():
        derived = table[table["spread"].notna()]
        rho = sps.spearmanr(derived["spread"].astype(float), derived["planted_importance"].astype(float)).statistic
        print(f"seed {seed}: Spearman {rho:.2f} over {len(derived)} touchpoints with a derived importance")
        assert len(derived) >= 5 and rho >= 0.7


def test_the_failing_basic_touchpoint_is_concentrate_here_not_low_priority(reports) -> None:
    product, touchpoint = TRUTH_ERROR_PRONE
    for seed, report in reports.items():
        row = next(t for t in report.for_product(product) if t.touchpoint == touchpoint)
        print(
            f"seed {seed}: {product}/{touchpoint} usage {row.usage_share:.1%}, importance {row.importance:.2f}"
            f" ({row.importance_basis}), {row.quadrant}"
        )
        # rarely used: by usage share it would be the least important of the product's main touchpoints
        assert row.usage_share < 0.05
        assert row.quadrant == "concentrate here" and row.importance_basis.startswith("derived")
        imp_x, perf_y = report.crosshairs[product]
        assert row.importance >= imp_x and row.performance < perf_y
        # every placed touchpoint says what its importance rests on; the unplaced ones are not ranked at all
        for t in report.touchpoints:
            placed = sum(u.importance is not None for u in report.for_product(t.product_id))
            # a quadrant needs crosshairs: at least two placed touchpoints in the product
            assert (t.quadrant is None) == (t.importance is None or placed < 2)
            assert t.importance_basis.startswith("derived" if t.importance is not None else "not placed")

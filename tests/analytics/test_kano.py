"""Penalty–reward on answers (pure core): groups by the last use before the answer, classes from a dummy regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxp.analytics.core import kano as kano_core
from cxp.analytics.core.kano import answer_groups, kano_classes
from cxp.analytics.errors import InvalidParameter

EFFECTS = {
    "pair": (1.5, 0.05, "basic"),
    "tune": (0.8, 0.4, "performance"),
    "wow": (0.15, 0.8, "attractive"),
    "logo": (0.0, 0.0, "indifferent"),
}


def _answers(seed: int, *, per_group: int = 60, devices: int = 150) -> pd.DataFrame:
    """Answers of devices with their own level; after a failure −P, after a success +R, otherwise neutral."""
    rng = np.random.default_rng(seed)
    level = rng.normal(3.6, 0.4, size=devices)
    heavy = rng.random(devices) < 0.3  # heavy users answer after uses more often and are happier: a bias to remove
    level[heavy] += 0.4
    rows = []
    for tp, (penalty, reward, _) in EFFECTS.items():
        for group, shift, n in (("low", -penalty, per_group), ("high", reward, 3 * per_group), ("middle", 0.0, 20)):
            weights = np.where(heavy, 3.0, 1.0) if group != "middle" else np.ones(devices)
            who = rng.choice(devices, size=n, p=weights / weights.sum())
            for d in who:
                rows.append(
                    {
                        "product_id": "p",
                        "device_id": f"d{d}",
                        "touchpoint": tp,
                        "group": group,
                        "score": level[d] + shift + rng.normal(0, 0.6),
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classes_and_spread_are_recovered(seed: int) -> None:
    fit = kano_classes(answers=_answers(seed)).table.set_index("touchpoint")
    for tp, (penalty, reward, kano) in EFFECTS.items():
        row = fit.loc[tp]
        assert row["kano_class"] == kano, (tp, row.to_dict())
        assert row["spread_ci_low"] <= penalty + reward <= row["spread_ci_high"]
        if kano != "indifferent":
            assert row["penalty_ci_low"] <= penalty <= row["penalty_ci_high"]


def test_too_few_answers_give_the_n_needed_not_a_class() -> None:
    answers = _answers(4, per_group=3)
    fit = kano_classes(answers=answers).table.set_index("touchpoint")
    assert fit["kano_class"].isna().all()
    assert fit.loc["pair", "reason"].startswith("not enough data: need 10 answers after a failed use (have 3)")
    # a failed side alone still gives the penalty, as a lower bound of the importance
    more = pd.concat([answers, _answers(5)[lambda f: (f["group"] == "low") & (f["touchpoint"] == "pair")]])
    row = kano_classes(answers=more).table.set_index("touchpoint").loc["pair"]
    assert row["importance_basis"] == "penalty" and row["penalty"] > 0.8


def test_kano_classes_refuses_bad_cuts() -> None:
    with pytest.raises(InvalidParameter):
        kano_classes(answers=_answers(1), basic_share=0.3, attractive_share=0.5)


def test_answers_are_grouped_by_the_days_last_use_before_them_and_the_failures_of_the_week_before() -> None:
    answers = pd.DataFrame(
        {
            # the day's last use before the answer failed / succeeded (a failure earlier in the week changes
            # nothing then); no use that day, with or without a failure in the 7 days before
            "last_use_ok": pd.array([False, True, True, None, None], dtype="boolean"),
            "failed_before": [False, False, True, False, True],
        },
        index=[10, 11, 12, 13, 14],
    )
    groups = answer_groups(answers=answers)
    # no use today after a failure this week: neither a clean middle nor a reaction
    assert groups.tolist() == ["low", "high", "high", "middle", None]
    assert groups.index.tolist() == [10, 11, 12, 13, 14]
    plain = answers.assign(last_use_ok=[False, True, True, None, None])  # an object column from the row path
    assert answer_groups(answers=plain).tolist() == groups.tolist()


def test_the_within_device_fit_equals_the_full_dummy_regression():
    """Absorbing the device intercepts (demeaning) gives the full model's estimates, errors, dof and σ."""
    rng = np.random.default_rng(3)
    n = 1500
    frame = pd.DataFrame(
        {
            "device_id": rng.integers(0, 200, n).astype(str),
            "touchpoint": rng.choice(["a", "b", "c"], n),
            "group": rng.choice(["low", "high", "middle"], n, p=[0.2, 0.3, 0.5]),
            "score": rng.normal(70, 10, n),
        }
    )
    devices, dev_idx = np.unique(frame["device_id"].to_numpy(), return_inverse=True)
    names = sorted({(t, g) for t, g in zip(frame["touchpoint"], frame["group"], strict=True) if g != "middle"})
    x = np.zeros((n, len(devices) + len(names)))
    x[np.arange(n), dev_idx] = 1.0
    for i, (t, g) in enumerate(zip(frame["touchpoint"], frame["group"], strict=True)):
        if g != "middle":
            x[i, len(devices) + names.index((t, g))] = 1.0
    y = frame["score"].to_numpy()
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    dof = n - rank
    sigma2 = float((y - x @ coef) @ (y - x @ coef)) / dof
    se = np.sqrt(np.diag(sigma2 * np.linalg.pinv(x.T @ x)))
    est, got_dof, sigma = kano_core._fit_product(frame)
    assert got_dof == dof and sigma == pytest.approx(np.sqrt(sigma2))
    for j, name in enumerate(names):
        assert est[name] == pytest.approx((coef[len(devices) + j], se[len(devices) + j]), rel=1e-9, abs=1e-9)


def test_products_are_fitted_apart_with_their_own_counts() -> None:
    """Several products in one call: each product's rows equal its answers fitted alone, the n per group equal plain
    counts, and answers of no group or no score are left out."""
    first = _answers(6)
    second = _answers(7, devices=90).assign(product_id="a", device_id=lambda f: "x" + f["device_id"])
    second = second[second["touchpoint"] != "logo"]  # a touchpoint answered in one product only
    odd = first.head(5).assign(group=[None, "other", "low", "high", "middle"], score=[3.0, 3.0, np.nan, 4.0, 2.0])
    both = pd.concat([first, second, odd], ignore_index=True).sample(frac=1.0, random_state=1)
    table = kano_classes(answers=both).table
    assert table["product_id"].tolist() == ["a"] * 3 + ["p"] * 4
    for product, alone in (("p", pd.concat([first, odd.iloc[3:]])), ("a", second)):
        pd.testing.assert_frame_equal(table[table["product_id"] == product].reset_index(drop=True),
                                      kano_classes(answers=alone).table, rtol=1e-9)
        counted = alone[alone["score"].notna()].groupby(["touchpoint", "group"]).size()
        rows = table[table["product_id"] == product].set_index("touchpoint")
        for tp, row in rows.iterrows():
            assert (row["n_low"], row["n_high"]) == (counted.get((tp, "low"), 0), counted.get((tp, "high"), 0))
            assert row["n_middle"] == counted.xs("middle", level="group").sum()

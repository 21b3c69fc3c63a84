"""Product catalogue and personas: complete, consistent, and guarded against bad specs."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence

import pytest

from cxp.device_sim import (
    CATALOGUE,
    COFFEE,
    PERSONAS,
    ConfigError,
    Persona,
    Product,
    QuantitySpec,
    catalogue_by_model,
    personas_by_name,
)
from cxp.device_sim.specs import CATEGORIES, JOURNEY_STAGES, OWNERS, poisson

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _product_rows(products: Sequence[Product] = CATALOGUE) -> list[dict[str, object]]:
    """One flat dict per product (a flat view of the catalogue for the checks below)."""
    return [
        {
            "product": p.model,
            "display_name": p.display_name,
            "upload_interval_s": p.upload_interval_s,
            "heartbeat_interval_s": p.heartbeat_interval_s,
            "expected_active_days_per_week": p.expected_active_days_per_week,
            "plans": list(p.plans),
            "has_battery": p.battery is not None,
            "description": p.description,
        }
        for p in products
    ]


def _touchpoint_rows(products: Sequence[Product] = CATALOGUE) -> list[dict[str, object]]:
    """One flat dict per (product, touchpoint) (a flat view of the catalogue for the checks below)."""
    rows: list[dict[str, object]] = []
    for p in products:
        for t in p.touchpoints:
            rows.append(
                {
                    "product": p.model,
                    "touchpoint": t.name,
                    "journey_stage": t.journey_stage,
                    "owner": t.owner,
                    "core": t.core,
                    "category": t.category,
                    "trigger": t.trigger,
                    "value": t.value,
                    "capability": t.capability,
                    "target_latency_ms": t.target_latency_ms,
                    "typical_duration_s": t.typical_duration_s,
                    "unit": t.quantity.unit if t.quantity else None,
                    "base_error_rate": t.base_error_rate,
                    "error_codes": list(t.error_codes),
                    "description": t.description,
                }
            )
    return rows


def test_three_products_with_their_model_ids() -> None:
    assert {"thermo-x1", "ebike-s2", "brew-c3"} <= set(catalogue_by_model())


@pytest.mark.parametrize("product", CATALOGUE, ids=lambda p: p.model)
def test_product_spec_is_complete(product) -> None:
    assert 15 * 60 <= product.upload_interval_s <= 60 * 60
    assert product.heartbeat_interval_s >= product.upload_interval_s
    assert 0 < product.expected_active_days_per_week <= 7
    assert 5 <= len(product.touchpoints) <= 12
    assert any(t.core for t in product.touchpoints)
    names = {t.name for t in product.touchpoints}
    assert {"app_pairing", "firmware_update", "support_chat", "app_dashboard"} <= names
    for t in product.touchpoints:
        assert NAME.match(t.name)
        assert t.journey_stage in JOURNEY_STAGES
        assert t.owner in OWNERS
        assert t.category in CATEGORIES
        assert 0 <= t.base_error_rate < 0.5
        assert t.error_codes and all(NAME.match(c) for c in t.error_codes)
        assert t.target_latency_ms > 0 and t.typical_duration_s > 0
        if t.quantity is not None:
            assert NAME.match(t.quantity.unit)
        if t.trigger == "periodic":
            assert t.period_days > 0
    assert sum(product.plan_weights) > 0


def test_catalogue_spans_journey_stages_and_owners() -> None:
    rows = _touchpoint_rows()
    assert {r["journey_stage"] for r in rows} == set(JOURNEY_STAGES)
    assert {r["owner"] for r in rows} == set(OWNERS)
    assert all(r["product"] and r["touchpoint"] for r in rows)


def test_quantity_samples_stay_in_bounds() -> None:
    rng = random.Random(1)
    for spec in (
        QuantitySpec("km", "lognormal", 9.0, 0.6, 0.3, 120.0, 2),
        QuantitySpec("cup", "poisson", 1.2, 0.0, 1.0, 4.0, 0),
        QuantitySpec("degC", "normal", 20.5, 1.2, 12.0, 28.0, 1),
        QuantitySpec("x", "uniform", 5.0, 2.0, 3.0, 7.0),
    ):
        xs = [spec.sample(rng) for _ in range(2000)]
        assert spec.min <= min(xs) and max(xs) <= spec.max
    ride = [QuantitySpec("km", "lognormal", 9.0, 0.6, 0.3, 120.0, 2).sample(rng) for _ in range(20_000)]
    assert 8.0 < sum(ride) / len(ride) < 10.0
    assert abs(sum(poisson(rng, 3.0) for _ in range(20_000)) / 20_000 - 3.0) < 0.1


def test_duplicate_touchpoints_are_rejected() -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(COFFEE, touchpoints=COFFEE.touchpoints + COFFEE.touchpoints[:1])
    with pytest.raises(ConfigError):
        catalogue_by_model([COFFEE, COFFEE])


def test_at_least_four_personas_with_one_fading() -> None:
    by_name = personas_by_name()
    assert len(by_name) >= 4
    fading = max(PERSONAS, key=lambda p: p.churn_prob)
    assert fading.churn_prob > 3 * min(p.churn_prob for p in PERSONAS)


def test_persona_guards() -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(PERSONAS[0], churn_prob=1.5)
    with pytest.raises(ConfigError):
        dataclasses.replace(PERSONAS[0], feature_mix={"bogus": 1.0})
    assert isinstance(PERSONAS[0], Persona)


def test_product_rows() -> None:
    rows = _product_rows()
    assert [r["product"] for r in rows] == [p.model for p in CATALOGUE]
    assert all(r["plans"] and r["upload_interval_s"] > 0 for r in rows)

"""The truth a fleet plants, as lived: churn after the experience hazard, and the touchpoints' Kano classes."""

from __future__ import annotations

from typing import Any

from cxp.device_sim.behaviour import device_outcome
from cxp.device_sim.fleet import Fleet
from cxp.device_sim.kano import touchpoint_truth


def lived_ground_truth(fleet: Fleet) -> list[dict[str, Any]]:
    """`fleet.ground_truth()` with churn as lived: up-front churners plus those the experience hazard made leave.

    Simulates every timeline to the fleet end (about 0.2 ms per device-day on one core).
    """
    rows = []
    for row, device in zip(fleet.ground_truth(), fleet.devices, strict=True):
        out = device_outcome(fleet=fleet, device=device)
        rows.append(
            {
                **row,
                "churns": out["churns"],
                "churn_at": out["churn_at"],
                "churn_kind": out["churn_kind"],
                "churn_cause": out["churn_cause"],
                "decided_at": out["decided_at"],
                "churn_drivers": out["churn_drivers"],
                "paradox_lifts": out["paradox_lifts"],
            }
        )
    return rows


def touchpoint_truth_rows(fleet: Fleet) -> list[dict[str, Any]]:
    """The planted class and effect sizes of every touchpoint of the fleet's products."""
    return [tt.as_dict() for p in fleet.products.values() for tt in touchpoint_truth(p).values()]

"""The experience guardrail of a running price experiment: take a look, list the looks taken."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import Field

from cxp.api.deps import ConnDep, PricingKey
from cxp.api.routers.pricing.common import ERR_404, ExperimentIdPath, InputModel, OutputModel, Stat, TextQuery
from cxp.api.routers.pricing.experiments import experiment_inputs, stored_experiment
from cxp.pricing.guardrail import GuardrailReport, check_guardrail, list_guardrail_looks
from cxp.pricing.metrics import Cohort

router = APIRouter()


class GuardrailLookIn(InputModel):
    """A look: as of when (default now; the window's share elapsed is the information fraction) and the α spending."""

    as_of: datetime | None = None
    spending: Literal["obrien-fleming", "pocock"] = "obrien-fleming"
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05


class ArmCheckOut(OutputModel):
    """One treatment arm at one look: health difference vs control as z, against the look's boundary."""

    arm: str
    estimate: Stat
    z: Stat
    boundary_z: float
    alpha_spent: float
    tolerated_drop: float
    stop: bool


class GuardrailLookOut(OutputModel):
    """One look at the experiment; `stop` when an arm is significantly worse than allowed."""

    experiment_id: str
    look: int
    as_of: datetime
    information_fraction: float
    spending: str
    alpha: float
    stop: bool
    final: bool
    recorded: bool
    arms: list[ArmCheckOut]


def _look_out(report: GuardrailReport) -> GuardrailLookOut:
    arms = [
        ArmCheckOut(
            arm=name,
            estimate=c.estimate,
            z=c.z,
            boundary_z=c.boundary_z,
            alpha_spent=c.alpha_spent,
            tolerated_drop=c.tolerated_drop,
            stop=c.stop,
        )
        for name, c in report.checks.items()
    ]
    return GuardrailLookOut(
        experiment_id=report.experiment_id,
        look=report.look,
        as_of=report.as_of,
        information_fraction=report.information_fraction,
        spending=report.spending,
        alpha=report.alpha,
        stop=report.stop,
        final=report.final,
        recorded=report.recorded,
        arms=arms,
    )


@router.post(
    "/experiments/{experiment_id}/guardrail-checks",
    response_model=GuardrailLookOut,
    summary="Take the next guardrail look at a running experiment (group-sequential, α spent over looks)",
    responses=ERR_404,
)
def create_guardrail_check(
    _: PricingKey,
    conn: ConnDep,
    experiment_id: ExperimentIdPath,
    body: GuardrailLookIn,
    product: TextQuery = None,
    segment: TextQuery = None,
) -> GuardrailLookOut:
    """Recorded, so the next boundary accounts for it; a look within 1 % of information of the last returns it."""
    _, plans, metrics = experiment_inputs(conn, experiment_id)
    report = check_guardrail(
        conn=conn,
        experiment_id=experiment_id,
        plans=tuple(plans.values()),
        as_of=body.as_of,
        spending=body.spending,
        alpha=body.alpha,
        cohort=Cohort(product=product, segment=segment),
        metrics=metrics,
    )
    return _look_out(report)


@router.get(
    "/experiments/{experiment_id}/guardrail-checks",
    response_model=list[GuardrailLookOut],
    summary="Every guardrail look taken at an experiment, oldest first",
    responses=ERR_404,
)
def list_guardrail_checks(_: PricingKey, conn: ConnDep, experiment_id: ExperimentIdPath) -> list[GuardrailLookOut]:
    """The looks as recorded (boundaries as computed at each look)."""
    stored_experiment(conn, experiment_id)
    return [_look_out(r) for r in list_guardrail_looks(conn=conn, experiment_id=experiment_id)]

"""Pricing endpoints (role `pricing`): plans, examples, backtests and their jobs, the model comparison,
experiments, willingness to pay — one module per resource, schemas beside them.

Choices callers can rely on:

* Money is exact: every amount is a decimal string in JSON (statistics such as shares, p-values and
  correlations are numbers).
* Plans are versioned. `POST /plans` stores the next version when `version` is left out; a given
  version must be the next one. Posting the latest definition again (or an existing version with the
  same definition) is idempotent: 200 with the stored version, nothing new is stored. An existing
  version with a different definition, or a version that skips ahead, is a 409.
* Backtests of at most `api.sync_backtest_limit` account-months × plans run in the request (200);
  larger ones run as a job (202, `Location: /v1/pricing/jobs/{id}`); the job's bills are at
  `/v1/pricing/jobs/{id}/bills` (JSON pages or `?format=csv`).
* `POST /solve` and `POST /tradeoff` bill many candidate plans: their work (accounts × months × plans a
  search bills) is held to the same limits; larger runs are jobs at `/v1/pricing/decisions/jobs/{id}`.
  `POST /horizon` and `POST /experiment-design` run in the request.
* `POST /experiments/{id}/guardrail-checks` takes a recorded look at a running experiment: the health
  guardrail against a group-sequential boundary (Lan–DeMets α spending over every look taken).
"""

from __future__ import annotations

from fastapi import APIRouter

from cxp.api.errors import ErrorBody
from cxp.api.routers.pricing import (
    backtests,
    comparison,
    decisions,
    examples,
    experiments,
    guardrail,
    jobs,
    plans,
    wtp,
)
from cxp.api.routers.pricing.common import PREFIX

# 400: a body that is not parseable JSON (FastAPI's own check, before any validation).
router = APIRouter(prefix=PREFIX, tags=["pricing"],
                   responses={400: {"model": ErrorBody, "description": "The body could not be parsed"}})
for resource in (plans, examples, backtests, jobs, comparison, experiments, guardrail, wtp, decisions):
    router.include_router(resource.router)

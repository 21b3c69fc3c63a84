"""What the pricing resources share: path and field types, decimal and statistic fields, input checks, error docs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import numpy as np
from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from cxp.api.errors import ErrorBody, ErrorDetail, Unprocessable

log = logging.getLogger("cxp.api.pricing")

PREFIX = "/v1/pricing"
MAX_VERSION = 2_147_483_647  # plan_versions.version is a PostgreSQL integer
ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
NO_NUL = r"^[^\x00]+$"  # PostgreSQL text cannot hold NUL characters

PlanIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="Plan id")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Plan version")]
ExperimentIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="Experiment id")]
TextQuery = Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_NUL)]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
PlanIdField = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
VersionField = Annotated[int, Field(ge=1, le=MAX_VERSION)]

ERR_404 = {404: {"model": ErrorBody, "description": "No such resource"}}
ERR_409 = {409: {"model": ErrorBody, "description": "Conflicts with what is stored"}}


def decimal_text(places: int) -> Callable[[dict[str, Any]], None]:
    """Document the decimal-string form a Decimal field accepts (plain digits, at most `places` decimals)."""

    def extra(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", []):
            if branch.get("type") == "string":
                branch["pattern"] = rf"^\+?[0-9]+(\.[0-9]{{1,{places}}})?$"

    return extra


Theta = Annotated[Decimal, Field(ge=0, le=100, max_digits=12, decimal_places=6, json_schema_extra=decimal_text(6))]
CostAmount = Annotated[
    Decimal, Field(ge=0, le=Decimal("1e9"), max_digits=18, decimal_places=6, json_schema_extra=decimal_text(6))
]
Price = Annotated[
    Decimal, Field(ge=0, le=Decimal("1e12"), max_digits=24, decimal_places=8, json_schema_extra=decimal_text(8))
]


def _finite(value: Any) -> Any:
    """NaN and infinities (not JSON) become None."""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


Stat = Annotated[float | None, BeforeValidator(_finite)]


def as_decimal(value: float | None) -> Decimal | None:
    """A float estimate as the decimal string it prints as (None stays None)."""
    return None if value is None or not np.isfinite(value) else Decimal(repr(float(value)))


class InputModel(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class OutputModel(BaseModel):
    """A response body, built from library objects' attributes."""

    model_config = ConfigDict(from_attributes=True)


def check_text(value: Any, loc: list[str | int]) -> None:
    """Reject strings PostgreSQL cannot store (NUL characters, unpaired surrogates) before they reach it."""
    if isinstance(value, str):
        bad = "\x00" in value
        if not bad:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                bad = True
        if bad:
            where = ".".join(str(p) for p in loc)
            raise Unprocessable(
                f"invalid request: {where}: text may not contain NUL characters or unpaired surrogates",
                details=[ErrorDetail(loc=loc, message="text may not contain NUL characters or unpaired surrogates")],
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, loc)
            check_text(v, [*loc, str(k)])
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_text(v, [*loc, i])

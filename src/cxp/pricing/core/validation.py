"""The base of every pricing model: frozen, unknown fields rejected, construction errors as `PlanValidationError`.

Error locations read like the plan's own paths (`components[1].charge.tiers[0].upper`): the
discriminator values pydantic puts in them (`usage`, `graduated`…) are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from cxp.pricing.errors import PlanValidationError

# Discriminator values; stripped from error locations so messages read like the plan's own paths.
_TAGS = frozenset(
    {
        "one_time_sale",
        "flat_fee",
        "tiered_subscription",
        "usage",
        "hybrid",
        "minimum_commitment",
        "per_outcome",
        "uptime_sla",
        "freemium",
        "unit",
        "graduated",
        "volume",
        "package",
    }
)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            part in _TAGS
            and i < len(loc) - 1
            and (i == 0 or isinstance(loc[i - 1], int) or loc[i - 1] in ("charge", "overage"))
        ):
            continue
        else:
            out += f".{part}" if out else part
    return out


def _problems(err: ValidationError) -> tuple[str, ...]:
    errors = err.errors(include_url=False)
    out = []
    for e in errors:
        loc = tuple(e["loc"])
        # pydantic also reports a too-short tuple when its only items failed: noise next to the cause.
        if e["type"] == "too_short" and any(
            len(o["loc"]) > len(loc) and tuple(o["loc"][: len(loc)]) == loc for o in errors
        ):
            continue
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] not in ("value_error", "assertion_error", "missing", "extra_forbidden"):
            inp = e.get("input")
            if not isinstance(inp, dict | list | tuple):
                msg += f" (got {inp!r})"
        where = _format_loc(loc)
        out.append(f"{where}: {msg}" if where else msg)
    return tuple(out)


def _to_plan_error(err: ValidationError, cls: type, data: Any) -> PlanValidationError:
    problems = _problems(err)
    what = cls.__name__
    if isinstance(data, Mapping) and "plan_id" in data:
        what += f" {data.get('plan_id')!r}" + (f" v{data['version']}" if "version" in data else "")
    return PlanValidationError(f"invalid {what}: " + "; ".join(problems), problems)


class StrictModel(BaseModel):
    """Frozen, strict-shaped base: construction errors surface as `PlanValidationError`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _to_plan_error(e, type(self), data) from None

    # Nested models are validated by pydantic-core without this __init__ (marking it a base init
    # keeps it that way), so nested errors keep their full location instead of being flattened.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:  # type: ignore[override]
        """Validate `obj` into this model, raising `PlanValidationError` on bad input."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise _to_plan_error(e, cls, obj) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:  # type: ignore[override]
        """Validate a JSON document into this model, raising `PlanValidationError` on bad input."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as e:
            raise _to_plan_error(e, cls, None) from None

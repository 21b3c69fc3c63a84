"""Exceptions of the pricing lab, all under one root."""

from __future__ import annotations


class PricingError(Exception):
    """Root of every error the pricing lab raises."""


class PlanValidationError(PricingError, ValueError):
    """A plan (or one of its parts) is invalid; `problems` lists every issue as 'where: what'."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems

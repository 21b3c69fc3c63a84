"""Hypothesis settings for the pricing tests: no deadline, 150 examples (`--hypothesis-profile=pricing-deep`: 3000)."""

from __future__ import annotations

import pytest
from hypothesis import settings

settings.register_profile("pricing", deadline=None, max_examples=150)
settings.register_profile("pricing-deep", deadline=None, max_examples=3000)


def pytest_configure(config: pytest.Config) -> None:
    # Only when no profile was chosen on the command line.
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("pricing")

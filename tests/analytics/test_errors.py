"""One error root for analytics, numeric failures mapped at the service edge, and the one hashable query value."""

from __future__ import annotations

import inspect
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cxp.analytics import service
from cxp.analytics.core import segments, voice
from cxp.analytics.core._frames import require_columns
from cxp.analytics.errors import (
    AnalyticsError,
    ComputationError,
    InvalidInput,
    InvalidParameter,
    maps_numeric_errors,
)
from cxp.analytics.query import ALL_DEVICES, AnalyticsQuery


def test_core_raises_analytics_errors_not_bare_value_errors() -> None:
    with pytest.raises(InvalidInput):
        voice.nps(scores=[11])
    with pytest.raises(InvalidParameter):
        segments.churn_risk(
            usage=pd.DataFrame(columns=["entity_id", "day", "uses"]), as_of="2026-01-01", weights={"slope": -1}
        )
    with pytest.raises(InvalidParameter):
        segments.segment_entities(features=pd.DataFrame({"entity_id": [1, 2]}), k_method="elbow")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        require_columns(pd.DataFrame(), ["x"], what="test")
    assert issubclass(InvalidParameter, AnalyticsError) and issubclass(ComputationError, AnalyticsError)


def test_numeric_failures_leave_a_service_as_computation_errors() -> None:
    @maps_numeric_errors
    def fails(*, error: Exception) -> None:
        """Raises what it is given."""
        raise error

    for error in (ValueError("bad"), ZeroDivisionError("0"), OverflowError("big"), np.linalg.LinAlgError("sing")):
        with pytest.raises(ComputationError) as caught:
            fails(error=error)
        assert caught.value.__cause__ is error
    with pytest.raises(InvalidParameter):
        fails(error=InvalidParameter("kept as raised"))
    with pytest.raises(KeyError):  # a bug is not the caller's input: it stays a 500
        fails(error=KeyError("x"))


def test_every_public_service_is_keyword_only_takes_the_query_and_maps_errors() -> None:
    for name in service.__all__:
        fn = getattr(service, name)
        params = inspect.signature(fn).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), name
        assert params["query"].default is ALL_DEVICES and "conn" in params, name
        assert hasattr(fn, "__wrapped__") and fn.__module__.startswith("cxp.analytics.service."), name


def test_the_query_is_frozen_hashable_and_checks_its_period() -> None:
    a = AnalyticsQuery(product="p", start=date(2025, 1, 1), end=date(2025, 1, 31))
    b = AnalyticsQuery(product="p", start=date(2025, 1, 1), end=date(2025, 1, 31))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.ending(date(2025, 2, 1)) == AnalyticsQuery(product="p", end=date(2025, 2, 1))
    assert ALL_DEVICES.is_all_devices and not a.is_all_devices
    with pytest.raises(AttributeError):
        a.product = "q"  # type: ignore[misc]
    with pytest.raises(InvalidParameter, match="after end"):
        AnalyticsQuery(start=date(2025, 2, 1), end=date(2025, 1, 1))

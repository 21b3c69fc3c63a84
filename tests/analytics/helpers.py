"""Shared assertions for the pure analytics tests."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd


def assert_no_nan(obj: object) -> None:
    """No float NaN anywhere: frames use nullable dtypes (<NA>) or None; dataclasses hold None, not NaN."""
    if isinstance(obj, pd.DataFrame):
        for col in obj.columns:
            s = obj[col]
            if pd.api.types.is_float_dtype(s.dtype) and not isinstance(s.dtype, pd.Float64Dtype):
                assert not np.isnan(s.to_numpy(dtype=float)).any(), f"NaN in numpy float column {col!r}"
            if s.dtype == object:
                bad = [v for v in s if isinstance(v, float) and math.isnan(v)]
                assert not bad, f"NaN in object column {col!r}"
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            assert_no_nan(getattr(obj, f.name))
        return
    if isinstance(obj, float):
        assert not math.isnan(obj), "NaN value"
    if isinstance(obj, list | tuple):
        for v in obj:
            assert_no_nan(v)
    if isinstance(obj, dict):
        for v in obj.values():
            assert_no_nan(v)

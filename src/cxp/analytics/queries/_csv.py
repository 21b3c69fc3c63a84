"""A `COPY … (FORMAT csv)` result parsed into a frame by Arrow's CSV reader, typed from the result's columns.

Arrow parses numbers, booleans, dates and timestamps in C without the GIL (other parts of a view run meanwhile) and
hands strings to pandas as they are (pandas' text columns are Arrow strings): 2–5× less time than pandas' reader
followed by a parse of each distinct date and timestamp text. Numeric and JSON columns come as text and are
converted after (Decimal, json.loads). The frame equals what the row path gives (tests/analytics/test_fetch_frame.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

NULL = "\\N"  # the NULL marker the COPY statement asks for: a text value `\N` is sent quoted, so it stays text

# Result column kinds Arrow reads itself; the others ("numeric", "json") are read as text and converted after.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(), "float": pa.float64(), "text": pa.string(), "bool": pa.bool_(), "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"), "timestamp": pa.timestamp("us"),
}


def read_copy_csv(data: bytes, *, columns: Sequence[tuple[str, str]], timezone: str) -> pd.DataFrame:
    """The rows of `data` (COPY CSV, NULL as `\\N`) as a frame: `columns` = (name, kind) in order; ints as int64
    (float64 with NaN where NULL), floats float64, text str, bools bool (object with None where NULL), dates
    datetime.date objects, timestamps datetime64[us] (with time zone `timezone` if timestamptz), numeric as Decimal
    and JSON parsed (objects, None where NULL)."""
    names = [name for name, _ in columns]
    types = {name: _ARROW_TYPES.get(kind, pa.string()) for name, kind in columns}
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 22),
        parse_options=pa_csv.ParseOptions(newlines_in_values=any(pa.types.is_string(t) for t in types.values())),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, null_values=[NULL], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"], timestamp_parsers=[pa_csv.ISO8601],
        ),
    )
    frame = table.to_pandas(date_as_object=True)
    for name, kind in columns:
        if kind == "timestamptz":
            frame[name] = frame[name].dt.tz_convert(timezone)
        elif kind in _FROM_TEXT:
            frame[name] = _FROM_TEXT[kind](frame[name])
    return frame


def _objects(parse: Callable[[str], Any]) -> Callable[[pd.Series], pd.Series]:
    def convert(column: pd.Series) -> pd.Series:
        # Each distinct text parsed once (few in practice), then spread by code; a missing value (code -1) is None.
        codes, texts = pd.factorize(column, use_na_sentinel=True)
        values = np.empty(len(texts) + 1, dtype=object)
        for i, text in enumerate(texts):  # one by one: a parsed JSON list must not become a numpy dimension
            values[i] = parse(text)
        values[-1] = None
        return pd.Series(values[codes], index=column.index, dtype=object)

    return convert


_FROM_TEXT = {"numeric": _objects(Decimal), "json": _objects(json.loads)}


# Arrow's error for a value it cannot parse as its column's type: the caller then reads the rows another way.
ParseError = pa.ArrowInvalid

"""A `COPY … (FORMAT csv)` result parsed into a frame by Arrow's CSV reader, typed from the result's columns.

Arrow parses numbers, booleans, dates and timestamps in C without the GIL (other parts of a view run meanwhile) and
hands strings to pandas as they are (pandas' text columns are Arrow strings): 2–5× less time than pandas' reader
followed by a parse of each distinct date and timestamp text. Numeric and JSON columns come as text and are
converted after (Decimal, json.loads). The frame equals what the row path gives (tests/analytics/test_fetch_frame.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

NULL = "\\N"  # the NULL marker the COPY statement asks for: a text value `\N` is sent quoted, so it stays text

# Result column kinds Arrow reads itself; the others ("numeric", "json") are read as text and converted after.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(), "float": pa.float64(), "text": pa.string(), "bool": pa.bool_(), "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"), "timestamp": pa.timestamp("us"),
}


def read_copy_csv(
    data: bytes, *, columns: Sequence[tuple[str, str]], timezone: str,
    convert: dict[str, Callable[[pd.Series], pd.Series]],
) -> pd.DataFrame:
    """The rows of `data` (COPY CSV, NULL as `\\N`) as a frame: `columns` = (name, kind) in order; ints as int64
    (float64 with NaN where NULL), floats float64, text str, bools bool (object with None where NULL), dates
    datetime.date objects, timestamps datetime64[us] (with time zone `timezone` if timestamptz); `convert` maps
    the other kinds to a function of their text column."""
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
        elif kind in convert:
            frame[name] = convert[kind](frame[name])
    return frame


# Arrow's error for a value it cannot parse as its column's type: the caller then reads the rows another way.
ParseError = pa.ArrowInvalid

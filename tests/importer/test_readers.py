"""The history readers (pure, no database): typed cells of the flat layout, packing of consecutive rows per device,
resumable positions, header and format checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cxp.importer import ImportFileError, check_file, detect_format
from cxp.importer.readers import BadRow, Mark, Piece, _cell, read_items
from cxp.tools.history import write_history


def _rows(n: int, devices: tuple[str, ...] = ("a", "b")) -> list[bytes]:
    out = []
    for d in devices:
        events = [
            {
                "seq": i,
                "ts": f"2026-02-01T00:00:{i % 60:02d}Z",
                "kind": "usage",
                "touchpoint": "brew",
                "success": i % 2 == 0,
            }
            for i in range(n)
        ]
        out.append(json.dumps({"device_id": d, "events": events}).encode())
    return out


def test_cells_are_typed_and_bad_ones_say_which_column() -> None:
    assert _cell("seq", " 42 ") == 42 and _cell("duration_s", "1.5") == 1.5
    assert _cell("success", "FALSE") is False and _cell("success", "1") is True
    assert _cell("metrics", '{"t": 1}') == {"t": 1}
    assert _cell("ts", datetime(2026, 2, 1, tzinfo=UTC)) == "2026-02-01T00:00:00+00:00"
    for column, value, message in [
        ("seq", "1.0", "seq: '1.0' is not an integer"),
        ("latency_ms", "fast", "latency_ms: 'fast' is not a number"),
        ("success", "maybe", "success: 'maybe' is not true or false"),
        ("detail", "{", "detail: not JSON"),
        ("ts", datetime(2026, 2, 1), "ts: timestamp without a time zone"),
    ]:
        with pytest.raises(ValueError, match=message):
            _cell(column, value)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_rows_of_one_device_are_packed_and_every_position_resumes_the_rest(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"h.{fmt}"
    write_history(path, fmt, _rows(30))
    items = list(read_items(path, fmt, mark_every=7))
    pieces = [i for i in items if isinstance(i, Piece)]
    assert sum(p.last_line - p.first_line + 1 for p in pieces) == 60
    assert all(len(p.rows) == p.last_line - p.first_line + 1 or not p.rows for p in pieces)
    assert {json.loads(p.payload)["device_id"] for p in pieces} == {"a", "b"}
    first = 2 if fmt == "csv" else 1
    assert pieces[0].first_line == first and pieces[-1].last_line == first + 59
    # From every mark, the rest of the file comes again: exactly the lines after it.
    marks = [i for i in items if isinstance(i, Mark)]
    for mark in marks:
        rest = [i for i in read_items(path, fmt, position=mark.position, line=mark.line) if isinstance(i, Piece)]
        lines = [n for p in rest for n in range(p.first_line, p.last_line + 1)]
        assert lines == list(range(mark.line + 1, first + 60)), mark


def test_a_csv_row_that_is_not_an_event_is_a_bad_row_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(
        "device_id,seq,ts,kind\na,1,2026-02-01T00:00:00Z,usage\na,x,2026-02-01T00:00:00Z,usage\n"
        "a,2,2026-02-01T00:00:00Z\n\na,3,2026-02-01T00:00:00Z,usage\n"
    )
    items = [i for i in read_items(path, "csv") if not isinstance(i, Mark)]
    bad = [(i.line, i.detail) for i in items if isinstance(i, BadRow)]
    assert bad == [(3, "seq: 'x' is not an integer"), (4, "3 cells for 4 columns")]
    assert [(p.first_line, p.last_line) for p in items if isinstance(p, Piece)] == [(2, 2), (6, 6)]


def test_jsonl_lines_are_pieces_with_their_device(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write_history(path, "jsonl", _rows(3))
    pieces = [i for i in read_items(path, "jsonl") if isinstance(i, Piece)]
    assert [(p.device_id, p.first_line) for p in pieces] == [("a", 1), ("b", 2)]


def test_formats_and_headers_are_checked_before_reading(tmp_path: Path) -> None:
    assert detect_format(Path("x.NDJSON")) == "jsonl" and detect_format(Path("x"), "parquet") == "parquet"
    with pytest.raises(ImportFileError, match="cannot tell the format"):
        detect_format(Path("x.xlsx"))
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("device_id,seq,ts,kind,colour\n")
    with pytest.raises(ImportFileError, match="unknown colour"):
        check_file(bad_header, "csv")
    not_parquet = tmp_path / "h.parquet"
    not_parquet.write_bytes(b"PAR1 but not really")
    with pytest.raises(ImportFileError, match="not a Parquet file"):
        check_file(not_parquet, "parquet")


def test_a_json_cell_repeating_a_key_is_refused_as_the_contract_refuses_it() -> None:
    # A JSON line repeating a key is dead-lettered (duplicate_key); a cell must not keep the last value silently.
    for text in ('{"t": 1, "t": 2}', '{"a": "x:y", "t": 1, "t": 1}', '{"a": {"b": 1, "b": 1}}'):
        with pytest.raises(ValueError, match="metrics: key '[tb]' repeats"):
            _cell("metrics", text)
    assert _cell("metrics", '{"a": "x:y", "t": 1}') == {"a": "x:y", "t": 1}  # colons in strings are no keys
    assert _cell("detail", '{"note": "a\\":b", "n": "{\\"n\\": 1}"}') == {"note": 'a":b', "n": '{"n": 1}'}


def test_a_json_cell_with_a_number_json_cannot_hold_is_a_bad_row_and_the_rest_is_read(tmp_path: Path) -> None:
    # Python's JSON reader takes NaN, Infinity and 1e999 (read as inf); the message written from them could not be
    # serialised, and the reader stopped the whole import at that row.
    for text in ('{"x": NaN}', '{"x": -Infinity}', '{"x": 1e999}', '{"a": {"b": [1, Infinity]}}'):
        with pytest.raises(ValueError, match="metrics: .* is not a finite number"):
            _cell("metrics", text)
    with pytest.raises(ValueError, match="metrics: holds a number that is not finite"):
        _cell("metrics", {"x": float("nan")})  # a Parquet map or struct
    path = tmp_path / "h.csv"
    path.write_text(
        'device_id,seq,ts,kind,metrics\na,1,2026-02-01T00:00:00Z,state,"{""x"": NaN}"\n'
        'a,2,2026-02-01T00:00:01Z,state,"{""x"": 1}"\n'
    )
    items = [i for i in read_items(path, "csv") if not isinstance(i, Mark)]
    assert [(i.line, i.detail) for i in items if isinstance(i, BadRow)] == [(2, "metrics: NaN is not a finite number")]
    assert [(p.first_line, p.last_line) for p in items if isinstance(p, Piece)] == [(3, 3)]

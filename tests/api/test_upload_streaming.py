"""CSV uploads are parsed as they are read from a spooled file, never held whole (issue 11): the reader pulls
the stream lazily, lines and UTF-8 characters split across read chunks still parse, and a multi-MiB import is
still all-or-nothing with the right line numbers through the real API and database."""

from __future__ import annotations

import io

import pytest

from cxp.api.errors import Unprocessable
from cxp.api.uploads import CsvColumns, iter_csv, line_loc

COLUMNS = CsvColumns(required=("device_id",), optional=("product_id", "plan"))
CHUNK = 64 * 1024


class CountingStream(io.BytesIO):
    """A byte stream that records how much the reader has pulled from it."""

    pulled = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.pulled += len(data)
        return data


def _big_csv(rows: int) -> bytes:
    return b"device_id,product_id,plan\n" + b"".join(b"d-%07d,p1,basic\n" % i for i in range(rows))


def test_the_reader_pulls_the_stream_as_rows_are_taken_not_all_at_once() -> None:
    data = _big_csv(200_000)  # ~4 MiB
    stream = CountingStream(data)
    rows = iter_csv(stream, columns=COLUMNS, loc=line_loc, max_bytes=len(data))
    first = next(rows)
    assert first.line == 2 and first.cells["device_id"] == "d-0000000"
    assert stream.pulled <= 2 * CHUNK < len(data)
    assert sum(1 for _ in rows) == 199_999 and stream.pulled == len(data)


def test_crlf_and_multibyte_characters_split_across_read_chunks_still_parse() -> None:
    head = b"device_id,product_id,plan\r\n"
    filler = b"d-0,p1," + b"x" * (CHUNK - len(head) - len(b"d-0,p1,") - 1) + b"\r"  # CR ends the first chunk
    data = head + filler + b"\nd-1,p1,caf\xc3\xa9\r\n"
    rows = list(iter_csv(io.BytesIO(data), columns=COLUMNS, loc=line_loc))
    assert [r.line for r in rows] == [2, 3], "a CRLF split by the chunk boundary is one line end"
    # "é" is two bytes: after an odd prefix, one of them straddles every chunk boundary
    data = head + b"d-1,p1,caf" + b"\xc3\xa9" * (CHUNK // 2) + b"\n"
    assert len(head + b"d-1,p1,caf") % 2 == 1
    rows = list(iter_csv(io.BytesIO(data), columns=COLUMNS, loc=line_loc))
    assert rows[0].cells["plan"] == "caf" + "é" * (CHUNK // 2)


def test_a_bad_byte_in_a_later_chunk_is_named_by_its_offset_in_the_file() -> None:
    data = _big_csv(10_000)
    at = len(data) - 5
    broken = data[:at] + b"\xff" + data[at + 1:]
    with pytest.raises(Unprocessable) as caught:
        list(iter_csv(io.BytesIO(broken), columns=COLUMNS, loc=line_loc, max_bytes=len(data)))
    assert f"byte {at}" in caught.value.message


def test_the_size_cap_stops_reading_at_the_cap() -> None:
    data = _big_csv(100_000)
    stream = CountingStream(data)
    with pytest.raises(Unprocessable) as caught:
        list(iter_csv(stream, columns=COLUMNS, loc=line_loc, max_bytes=1024 * 1024))
    assert "larger than 1 MiB" in caught.value.message
    assert stream.pulled <= 1024 * 1024 + CHUNK


def test_a_line_without_end_is_refused_once_it_passes_the_line_cap() -> None:
    data = b"device_id,product_id,plan\n" + b"x" * (3 * 1024 * 1024)
    stream = CountingStream(data)
    with pytest.raises(Unprocessable) as caught:
        list(iter_csv(stream, columns=COLUMNS, loc=line_loc, max_bytes=len(data)))
    assert "line 2: longer than 1 MiB" in caught.value.message and stream.pulled < 2 * 1024 * 1024


def test_quote_faults_and_nul_bytes_far_into_a_file_name_their_line() -> None:
    body = _big_csv(50_000)
    with pytest.raises(Unprocessable) as caught:
        list(iter_csv(io.BytesIO(body + b'd-x,p1,"basic\nd-y,p1,pro\n'), columns=COLUMNS, loc=line_loc,
                      max_bytes=len(body) + 100))
    assert "line 50002, column 8" in caught.value.message and "unterminated" in caught.value.message
    with pytest.raises(Unprocessable) as caught:
        list(iter_csv(io.BytesIO(body + b"d-x,p\x001,pro\n"), columns=COLUMNS, loc=line_loc, max_bytes=len(body) + 100))
    assert "line 50002, column 6" in caught.value.message and "NUL" in caught.value.message


@pytest.mark.integration
def test_a_multi_mib_import_is_all_or_nothing_through_the_api(db, test_db_api) -> None:
    api = test_db_api
    assert api.client.put("/v1/registry/products/kettle-k1", headers=api.headers("admin"),
                          json={"name": "Kettle"}).status_code == 200
    head = "device_id,product_id,activated_at,plan\n"
    rows = [f"k-{i:06d},kettle-k1,2026-01-01T00:00:00Z,basic\n" for i in range(60_000)]  # ~2.8 MiB: spooled to disk
    bad = [*rows[:-1], "k-bad,kettle-k1,not-a-date,basic\n"]

    def upload(lines: list[str]):
        return api.client.post("/v1/registry/devices/import", headers=api.headers("admin"),
                               files={"file": ("devices.csv", (head + "".join(lines)).encode(), "text/csv")})

    r = upload(bad)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["loc"] == ["line", 60_001, "activated_at"]
    assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == 0, "nothing stored from a bad file"
    r = upload(rows)
    assert r.status_code == 200 and r.json() == {"kind": "devices", "rows": 60_000, "stored": 60_000}
    assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == 60_000


@pytest.mark.integration
def test_a_survey_csv_body_is_spooled_and_parsed(test_db_api) -> None:
    api = test_db_api
    lines = ["respondent_id,too_cheap,cheap,expensive,too_expensive"]
    lines += [f"r{i},{5 + i % 5},{10 + i % 7},{20 + i % 9},{30 + i % 11}" for i in range(20_000)]  # ~0.6 MiB
    headers = {**api.headers("pricing"), "Content-Type": "text/csv"}
    r = api.client.post("/v1/pricing/wtp/van-westendorp", headers=headers, content="\n".join(lines).encode())
    assert r.status_code == 200, r.text
    assert r.json()["n"] + r.json()["dropped_inconsistent"] == 20_000
    unterminated = "\n".join(lines[:100]) + '\nr-x,"5,10,20,30\n'
    r = api.client.post("/v1/pricing/wtp/van-westendorp", headers=headers, content=unterminated.encode())
    assert r.status_code == 422 and "line 101" in r.json()["error"]["message"]

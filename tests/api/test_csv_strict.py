"""The strict CSV reader of every upload (unterminated quotes, duplicate headers, NUL bytes → 422 with line and
column) and CSV exports that a spreadsheet cannot run as formulas (issue 11)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cxp.api.errors import Unprocessable
from cxp.api.schemas import csv_response
from cxp.api.uploads import CsvColumns, line_loc, read_csv
from cxp.core.csvout import neutralise

COLUMNS = CsvColumns(required=("device_id",), optional=("product_id", "plan"))


def _problem(text: str) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        read_csv(text.encode(), columns=COLUMNS, loc=line_loc)
    return caught.value


def test_an_unterminated_quote_is_refused_where_it_opens_instead_of_swallowing_the_next_row() -> None:
    # before: the quote swallowed line 3 into line 2's plan, and the file imported as one row
    exc = _problem('device_id,product_id,plan\nd-1,p1,"basic\nd-2,p1,pro\n')
    assert "line 2, column 8" in exc.message and "unterminated" in exc.message
    assert exc.details[0].loc == ["line", 2]
    # a later quote that "closes" it leaves text behind the closing quote, or a value over two lines
    exc = _problem('device_id,product_id,plan\nd-1,p1,"basic\nd-2,p1,"pro"\n')
    assert "line 2, column 8" in exc.message
    exc = _problem('device_id,product_id,plan\nd-1,"p1,basic\nd-2",p1,pro\n')
    assert "line 2, column 5" in exc.message
    exc = _problem('device_id,product_id,plan\nd-1,"p1"x,basic\n')
    assert "line 2, column 9" in exc.message and "after the closing quote" in exc.message


def test_well_formed_quotes_still_read() -> None:
    rows = read_csv(b'device_id,product_id,plan\r\n"d-1","p,1","say ""hi"""\r\n\r\nd-2,,\r\n', columns=COLUMNS,
                    loc=line_loc)
    assert [(r.line, r.cells) for r in rows] == [
        (2, {"device_id": "d-1", "product_id": "p,1", "plan": 'say "hi"'}), (4, {"device_id": "d-2"})]


def test_nul_bytes_name_line_and_column() -> None:
    exc = _problem("device_id,product_id\nd-1,p1\nd-2,p\x001\n")
    assert "line 3, column 6" in exc.message and "NUL" in exc.message
    assert exc.details[0].loc == ["line", 3]


def test_a_column_named_twice_is_refused() -> None:
    exc = _problem("device_id,plan,plan\nd-1,a,b\n")
    assert "line 1" in exc.message and "plan" in exc.message and exc.details[0].loc == ["line", 1, "plan"]


@pytest.mark.parametrize("cell", ["=1+2", "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "=HYPERLINK(\"x\")", "-",
                                  "-cmd|' /C calc'!A0"])
def test_formula_leading_text_is_neutralised(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-3.5", "+4", "-0.25e3", "-7", ".5", "plain", "", "a=b", -3, Decimal("-1.20"),
                                  -2.5])
def test_numbers_and_plain_text_pass(cell) -> None:
    assert neutralise(cell) == cell


def test_csv_response_neutralises_every_text_cell_and_keeps_negative_numbers() -> None:
    rows = [{"name": "=HYPERLINK(\"http://127.0.0.1/\",\"x\")", "bill": Decimal("-12.50"), "note": "-3",
             "at": datetime(2026, 1, 1, tzinfo=UTC)}]
    body = csv_response(rows, filename="t").body.decode()
    parsed = list(csv.DictReader(io.StringIO(body)))
    assert parsed == [{"name": "'=HYPERLINK(\"http://127.0.0.1/\",\"x\")", "bill": "-12.50", "note": "-3",
                       "at": "2026-01-01T00:00:00+00:00"}]


@pytest.mark.integration
def test_uploads_and_exports_through_the_api(db, test_db_api) -> None:
    api = test_db_api
    text = 'account_id,name,segment\nacc-1,"One,consumer\nacc-2,Two,smb\n'
    r = api.client.post("/v1/registry/accounts/import", headers=api.headers("admin"),
                        files={"file": ("a.csv", text.encode(), "text/csv")})
    assert r.status_code == 422 and "line 2, column 7" in r.json()["error"]["message"], r.text
    assert db.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0
    r = api.client.post("/v1/registry/accounts/import", headers=api.headers("admin"),
                        files={"file": ("a.csv", b"account_id,name\nacc-1,O\x00ne\n", "text/csv")})
    assert r.status_code == 422 and "line 2, column 8" in r.json()["error"]["message"], r.text
    evil = "=HYPERLINK(\"http://127.0.0.1/steal\",\"click\")"
    assert api.client.put("/v1/registry/accounts/acc-x", headers=api.headers("admin"),
                          json={"name": evil, "segment": "@risk"}).status_code == 200
    exported = api.get("/v1/registry/accounts?format=csv")
    assert exported.status_code == 200
    row = next(csv.DictReader(io.StringIO(exported.text)))
    assert row == {"account_id": "acc-x", "name": "'" + evil, "segment": "'@risk"}

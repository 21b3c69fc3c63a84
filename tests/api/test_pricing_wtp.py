"""Willingness-to-pay endpoints: JSON, CSV uploads and stored survey answers give the library's results."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from cxp.pricing.core import wtp

pytestmark = pytest.mark.integration

VW_CSV = """respondent_id,too_cheap,cheap,expensive,too_expensive
r1,2,4,9,12
r2,3,5,8,11
r3,1,3.5,7.5,10
r4,2.5,4,10,14
r5,3,6,9,13
r6,1.5,3,6,9
r7,9,4,3,2
"""

GG_CSV = """respondent_id,price,would_buy
a,2.99,yes
b,2.99,yes
c,2.99,no
d,3.99,yes
e,3.99,no
f,3.99,no
g,4.99,Yes
h,4.99,no
i,1.99,1
j,1.99,true
"""


def _rows(text: str) -> list[dict[str, str]]:
    """The CSV's rows as dicts, read by the standard library (the oracle the API's reader is checked against)."""
    return list(csv.DictReader(io.StringIO(text)))


def _post_raw(api, path: str, content: bytes, content_type: str):
    """POST a raw body with its own content type, as the pricing role."""
    return api.client.post(path, content=content, headers={**api.headers("pricing"), "Content-Type": content_type})


def _assert_vw(body: dict, expected: wtp.VanWestendorpResult) -> None:
    assert body["n"] == expected.n and body["dropped_inconsistent"] == expected.dropped_inconsistent
    for f in ("optimal_price", "indifference_price", "marginal_cheapness", "marginal_expensiveness"):
        want = getattr(expected, f)
        assert (body[f] is None) == (want is None), f
        if want is not None:
            assert isinstance(body[f], str) and float(body[f]) == pytest.approx(want), f
    assert [Decimal(p["price"]) for p in body["curves"]] == [Decimal(repr(p)) for p in expected.prices.tolist()]
    assert [p["too_expensive"] for p in body["curves"]] == pytest.approx(expected.too_expensive.tolist())
    assert [p["cheap"] for p in body["curves"]] == pytest.approx(expected.cheap.tolist())


def test_van_westendorp_json_and_csv_equal_the_library(pricing_fleet, test_db_api) -> None:
    expected = wtp.van_westendorp(responses=wtp.van_westendorp_from_records(records=_rows(VW_CSV)))
    assert expected.dropped_inconsistent == 1 and expected.optimal_price is not None
    upload = test_db_api.post("/v1/pricing/wtp/van-westendorp", role="pricing",
                              files={"file": ("survey.csv", VW_CSV.encode(), "text/csv")})
    assert upload.status_code == 200, upload.text
    _assert_vw(upload.json(), expected)
    raw = _post_raw(test_db_api, "/v1/pricing/wtp/van-westendorp", VW_CSV.encode(), "text/csv")
    assert raw.json() == upload.json()
    records = [dict(zip(("respondent_id", *wtp.VW_COLUMNS), line.split(","), strict=True))
               for line in VW_CSV.strip().splitlines()[1:]]
    as_json = test_db_api.post("/v1/pricing/wtp/van-westendorp", role="pricing", json={"responses": records})
    assert as_json.status_code == 200 and as_json.json() == upload.json()
    rng = upload.json()["acceptable_range"]
    assert float(rng["low"]) == pytest.approx(expected.acceptable_range[0])


def test_bad_csv_names_the_line_and_column(pricing_fleet, test_db_api) -> None:
    bad = VW_CSV.replace("r3,1,3.5,", "r3,1,abc,")
    r = test_db_api.post("/v1/pricing/wtp/van-westendorp", role="pricing",
                         files={"file": ("survey.csv", bad.encode(), "text/csv")})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["details"][0]["loc"] == ["file", "line 4", "cheap"]
    assert "line 4" in err["message"] and "'cheap'" in err["message"] and "abc" in err["details"][0]["message"]
    no_column = test_db_api.post("/v1/pricing/wtp/van-westendorp", role="pricing",
                                 files={"file": ("s.csv", b"respondent_id,too_cheap,cheap,expensive\nx,1,2,3\n")})
    assert no_column.status_code == 422 and "too_expensive" in no_column.json()["error"]["message"]
    assert no_column.json()["error"]["details"][0]["loc"] == ["file", "line 1", "too_expensive"]
    negative = test_db_api.post("/v1/pricing/wtp/gabor-granger", role="pricing",
                                files={"file": ("g.csv", b"price,would_buy\n1.99,yes\n-2,no\n3,maybe\n")})
    locs = [d["loc"] for d in negative.json()["error"]["details"]]
    assert negative.status_code == 422 and locs == [["file", "line 3", "price"], ["file", "line 4", "would_buy"]]
    for content in (b"", b"\xff\xfe\x00", b"price,would_buy\n"):
        r = test_db_api.post("/v1/pricing/wtp/gabor-granger", role="pricing", files={"file": ("g.csv", content)})
        assert r.status_code == 422, content
    too_few = test_db_api.post("/v1/pricing/wtp/van-westendorp", role="pricing",
                               json={"responses": [{"too_cheap": 1, "cheap": 2, "expensive": 3, "too_expensive": 4}]})
    assert too_few.status_code == 422 and "at least two" in too_few.json()["error"]["message"]
    wrong_type = _post_raw(test_db_api, "/v1/pricing/wtp/van-westendorp", b"<xml/>", "application/xml")
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["code"] == "unsupported_media_type"
    not_json = _post_raw(test_db_api, "/v1/pricing/wtp/van-westendorp", b"{", "application/json")
    assert not_json.status_code == 422
    no_file = test_db_api.post("/v1/pricing/wtp/van-westendorp", role="pricing", data={"other": "x"},
                               files={"other_file": ("x.csv", b"a")})
    assert no_file.status_code == 422 and "file" in no_file.json()["error"]["message"]


def test_gabor_granger_json_and_csv_equal_the_library(pricing_fleet, test_db_api) -> None:
    expected = wtp.gabor_granger(answers=wtp.gabor_granger_from_records(records=_rows(GG_CSV)))
    upload = test_db_api.post("/v1/pricing/wtp/gabor-granger", role="pricing",
                              files={"file": ("gg.csv", GG_CSV.encode(), "text/csv")})
    assert upload.status_code == 200, upload.text
    body = upload.json()
    assert body["revenue_maximising_price"] == str(expected.revenue_maximising_price) == "4.99"
    assert [p["price"] for p in body["points"]] == [str(p) for p in expected.prices]
    assert [p["demand"] for p in body["points"]] == pytest.approx(list(expected.demand))
    assert [p["answers"] for p in body["points"]] == list(expected.answers)
    assert [float(p["revenue_index"]) for p in body["points"]] == pytest.approx(list(expected.revenue_index))
    answers = [{"respondent_id": a.respondent_id, "price": str(a.price), "would_buy": a.would_buy}
               for a in wtp.gabor_granger_from_records(records=_rows(GG_CSV))]
    as_json = test_db_api.post("/v1/pricing/wtp/gabor-granger", role="pricing", json={"answers": answers})
    assert as_json.json() == body


def _feedback(conn, survey: str, details: list[dict]) -> None:
    key = conn.execute("SELECT min(device_key) FROM devices").fetchone()[0]
    seq0 = 10**12 + int(uuid.uuid4().int % 10**9) * 100
    with conn.transaction():
        for i, detail in enumerate(details):
            conn.execute(
                "INSERT INTO events (device_key, ts, seq, kind, detail) VALUES (%s, %s, %s, 'feedback', %s)",
                (key, datetime(2026, 1, 10, tzinfo=UTC) + timedelta(minutes=i), seq0 + i,
                 json.dumps({"survey": survey, **detail})))


def test_survey_answers_from_feedback_events(pricing_fleet, test_db_api) -> None:
    survey = f"vw-{uuid.uuid4().hex[:8]}"
    _feedback(pricing_fleet.conn, survey, [{"too_cheap": i, "cheap": i + 2, "expensive": i + 5, "too_expensive": i + 7}
                                            for i in range(1, 11)])
    vw = test_db_api.get(f"/v1/pricing/wtp/van-westendorp?survey={survey}", role="pricing")
    assert vw.status_code == 200, vw.text
    assert vw.json()["n"] == 10 and float(vw.json()["optimal_price"]) == pytest.approx(9)
    assert (float(vw.json()["acceptable_range"]["low"]), float(vw.json()["acceptable_range"]["high"])) == (
        pytest.approx(8), pytest.approx(10))
    gg_survey = f"gg-{uuid.uuid4().hex[:8]}"
    _feedback(pricing_fleet.conn, gg_survey, [{"price": p, "would_buy": b} for p, b in
                                               ((5, True), (5, True), (10, True), (10, False), (20, False))])
    gg = test_db_api.get(f"/v1/pricing/wtp/gabor-granger?survey={gg_survey}", role="pricing").json()
    assert gg["revenue_maximising_price"] == "5" and [p["demand"] for p in gg["points"]] == [1.0, 0.5, 0.0]
    empty = test_db_api.get(f"/v1/pricing/wtp/van-westendorp?survey=none-{survey}", role="pricing")
    assert empty.status_code == 404 and "at least two" in empty.json()["error"]["message"]
    assert test_db_api.get("/v1/pricing/wtp/gabor-granger?survey=nothing-here", role="pricing").status_code == 404


def test_elasticity_fit(pricing_fleet, test_db_api) -> None:
    prices = [1, 2, 4, 8, 16]
    quantities = [1000 * p ** -1.5 * f for p, f in zip(prices, (1.01, 0.98, 1.02, 0.99, 1.0), strict=True)]
    r = test_db_api.post("/v1/pricing/wtp/elasticity", role="pricing",
                         json={"prices": prices, "quantities": quantities})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = wtp.fit_elasticity(prices=np.array(prices, float), quantities=np.array(quantities))
    assert body["elasticity"] == pytest.approx(expected.elasticity) and body["elasticity"] == pytest.approx(-1.5, 0.02)
    assert body["low"] < body["elasticity"] < body["high"] and body["n"] == 5
    exact = test_db_api.post("/v1/pricing/wtp/elasticity", role="pricing",
                             json={"prices": ["1.00", "2.00"], "quantities": [100, 50]}).json()
    assert exact["elasticity"] == pytest.approx(-1.0) and exact["std_error"] is None
    for bad in ({"prices": [1, 2], "quantities": [1]}, {"prices": [2, 2], "quantities": [1, 3]},
                {"prices": [1, -2], "quantities": [1, 3]}):
        assert test_db_api.post("/v1/pricing/wtp/elasticity", role="pricing", json=bad).status_code == 422, bad

"""Issue 14: a stated importance × quality table (CSV or JSON) placed on the touchpoint IPA chart, crosshairs stated."""

from __future__ import annotations

import pytest

from cxp.store.db import connect

pytestmark = pytest.mark.integration

CSV = (
    "product_id,touchpoint,importance,quality,respondents,scale_min,scale_max\n"
    "thermo-x1,heating_cycle,4.6,3.1,120,1,5\n"
    "thermo-x1,set_schedule,2.4,4.2,118,1,5\n"
    "thermo-x1,voice_command,2.0,2.6,95,1,5\n"
    "thermo-x1,app_pairing,4.1,2.2,80,1,5\n"
)


@pytest.fixture
def survey_api(fleet_api, fleet_settings):
    """The fleet API; the stored survey is removed afterwards (the fleet database is shared read-only)."""
    yield fleet_api
    with connect(fleet_settings.db) as conn:
        conn.execute("DELETE FROM touchpoint_survey")


def _put(api, headers: dict[str, str] | None = None, **kw):
    return api.client.put(
        "/v1/experience/touchpoint-survey", headers={**api.headers("product"), **(headers or {})}, **kw
    )


def test_a_csv_survey_is_placed_with_the_chosen_crosshairs(survey_api) -> None:
    r = _put(survey_api, content=CSV, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert len(r.json()["rows"]) == 4
    mid = survey_api.get(
        "/v1/experience/touchpoints?product=thermo-x1&days=3000&survey_crosshairs=midpoint", role="product"
    ).json()
    assert mid["survey_crosshairs"]["thermo-x1"] == [3.0, 3.0]
    assert mid["survey_crosshair_basis"] == "crosshairs at the midpoint of the survey's scale"
    quadrants = {p["touchpoint"]: p["quadrant"] for p in mid["survey"]}
    assert quadrants == {
        "heating_cycle": "keep up the good work",
        "set_schedule": "possible overkill",
        "voice_command": "low priority",
        "app_pairing": "concentrate here",
    }
    means = survey_api.get("/v1/experience/touchpoints?product=thermo-x1&days=3000", role="product").json()
    assert means["survey_crosshairs"]["thermo-x1"] == pytest.approx(
        [(4.6 + 2.4 + 2.0 + 4.1) / 4, (3.1 + 4.2 + 2.6 + 2.2) / 4]
    )
    assert "means" in means["survey_crosshair_basis"]
    # on the means heating_cycle's quality (3.1) is above the average (3.03): still keep up the good work
    assert {p["touchpoint"]: p["quadrant"] for p in means["survey"]}["heating_cycle"] == "keep up the good work"
    page = survey_api.client.get(
        "/dashboard/touchpoints?product=thermo-x1&days=3000&survey_crosshairs=midpoint",
        headers=survey_api.headers("product"),
    )
    assert page.status_code == 200 and "midpoint of the survey" in page.text and "stated (survey)" in page.text


def test_json_replaces_a_products_table_and_bad_rows_store_nothing(survey_api) -> None:
    _put(survey_api, content=CSV, headers={"content-type": "text/csv"})
    rows = [
        {
            "product_id": "thermo-x1",
            "touchpoint": "heating_cycle",
            "importance": 6,
            "quality": 5,
            "respondents": 40,
            "scale_min": 1,
            "scale_max": 7,
        }
    ]
    r = _put(survey_api, json={"rows": rows})
    assert r.status_code == 200 and [x["touchpoint"] for x in r.json()["rows"]] == ["heating_cycle"]
    bad = CSV.replace("4.6,3.1,120", "6.0,3.1,120")  # importance off its 1–5 scale
    r = _put(survey_api, content=bad, headers={"content-type": "text/csv"})
    assert r.status_code == 422 and "line 2" in r.json()["error"]["message"]
    assert "scale" in r.json()["error"]["message"]
    kept = survey_api.get("/v1/experience/touchpoint-survey", role="product").json()["rows"]
    assert [x["scale_max"] for x in kept] == [7.0]

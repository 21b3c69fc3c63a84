"""Journey-map dashboard page and its SVG export over HTTP on the simulated fleet: the SVG parses as XML and holds
the same cells, pain points and funnel as the API resource; scope filters (product, segment, persona); escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.integration

SVG = "{http://www.w3.org/2000/svg}"


def _svg(fleet_api, query: str) -> ET.Element:
    r = fleet_api.get(f"/dashboard/journey-map/svg?{query}", role="product")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert "script" not in r.text.lower()
    return ET.fromstring(r.text)


def _groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]


def test_svg_holds_the_api_map_of_a_product(fleet_api, loaded_fleet) -> None:
    product, touchpoint = loaded_fleet.error_prone
    api = fleet_api.get(f"/v1/experience/journey-map?product={product}&days=56", role="product").json()
    root = _svg(fleet_api, f"product={product}&days=56")
    assert root.tag == f"{SVG}svg" and int(root.get("data-cells")) == len(api["cells"]) > 0
    cards = {(g.get("data-stage"), g.get("data-touchpoint")): g for g in _groups(root, "touchpoint")}
    assert set(cards) == {(c["stage"], c["touchpoint"]) for c in api["cells"]}
    for c in api["cells"]:
        assert cards[(c["stage"], c["touchpoint"])].get("data-pain") == str(c["pain"]).lower()
    assert cards[("post_purchase", touchpoint)].get("data-pain") == "true"  # the planted fault
    funnel = {g.get("data-stage"): g for g in _groups(root, "lifecycle")}
    api_funnel = [s for s in api["stages"] if s["lifecycle_stage"] is not None]
    assert list(funnel) == [s["lifecycle_stage"] for s in api_funnel]
    for s in api_funnel:
        assert int(funnel[s["lifecycle_stage"]].get("data-devices")) == s["devices"]
    assert [g.get("data-stage") for g in _groups(root, "stage")] == ["pre_purchase", "purchase", "post_purchase"]
    pains = " ".join(t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "pain")
    assert f"{product}/{touchpoint}" in pains
    assert product in (root.find(f"{SVG}title").text or "")


def test_persona_and_segment_narrow_the_map(fleet_api) -> None:
    personas = fleet_api.get("/v1/experience/personas?product=thermo-x1&days=56", role="product").json()
    name = personas["segments"][0]["name"]
    whole = fleet_api.get("/v1/experience/journey-map?product=thermo-x1&days=56", role="product").json()
    one = fleet_api.get("/v1/experience/journey-map", params={"product": "thermo-x1", "days": 56, "persona": name},
                        role="product").json()
    assert one["persona"] == name and one["reason"] is None
    assert sum(c["devices"] for c in one["cells"]) < sum(c["devices"] for c in whole["cells"])
    root = _svg(fleet_api, f"product=thermo-x1&days=56&persona={name.replace(' ', '+')}")
    assert name in (root.find(f"{SVG}title").text or "")
    devices = {g.get("data-touchpoint"): g for g in _groups(root, "touchpoint")}
    assert set(devices) == {c["touchpoint"] for c in one["cells"]}
    segment = fleet_api.get("/v1/experience/journey-map?segment=no-such-segment", role="product").json()
    assert segment["cells"] == [] and "not enough data" in segment["reason"]


def test_unknown_persona_is_escaped_and_explained(fleet_api) -> None:
    hostile = '<script>alert("x")</script> & co'
    r = fleet_api.get("/dashboard/journey-map/svg", params={"product": "thermo-x1", "persona": hostile},
                      role="product")
    root = ET.fromstring(r.text)  # still well-formed XML
    reason = next(t.text for t in root.iter(f"{SVG}text") if t.get("class") == "reason")
    assert "not enough data" in reason and hostile in reason and "<script>" not in r.text
    page = fleet_api.get("/dashboard/journey-map", params={"persona": hostile}, role="product")
    assert page.status_code == 200 and "<script>alert" not in page.text


def test_page_embeds_the_map_and_links_the_svg(fleet_api) -> None:
    r = fleet_api.get("/dashboard/journey-map?product=brew-c3&days=56", role="product")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in r.text and 'class="touchpoint"' in r.text
    assert 'href="/dashboard/journey-map/svg?product=brew-c3&amp;days=56"' in r.text
    assert 'href="/dashboard/journey-map"' in r.text  # in the nav


def test_roles_and_bad_parameters(fleet_api) -> None:
    assert fleet_api.get("/dashboard/journey-map/svg", role="pricing").status_code == 403
    bad = fleet_api.get("/dashboard/journey-map?days=1", role="product")
    assert bad.status_code == 422 and "days" in bad.text

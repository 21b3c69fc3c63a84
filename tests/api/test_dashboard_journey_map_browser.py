"""The journey-map page and its SVG export in a real headless Chromium against a real uvicorn server on the fleet
database (the browser harness of tests/api/test_dashboard_browser.py): drawn without script errors, the cards laid
out inside the map, the export opened as an SVG document; screenshots go to .stack/screenshots/."""

from __future__ import annotations

import json

import pytest

from tests.api.test_dashboard_browser import (  # noqa: F401 - fixtures used by name
    SCREENSHOTS,
    admin_tab,
    browser,
    live_url,
    sign_in,
    tokens,
)

pytestmark = pytest.mark.integration

CARD_BOXES = """JSON.stringify(Array.from(document.querySelectorAll('svg.journey-map g.touchpoint')).map(g => {
  const b = g.getBBox(); return [g.dataset.touchpoint, g.dataset.pain, b.x, b.y, b.width, b.height]; }))"""


def test_product_key_sees_the_map_with_its_cards_laid_out(browser, live_url, tokens) -> None:  # noqa: F811
    tab = browser.tab()
    page = sign_in(tab, live_url, tokens["product"], "/dashboard/journey-map?product=brew-c3&days=56")
    assert page.path == "/dashboard/journey-map?product=brew-c3&days=56"
    assert not page.errors, page.errors
    cells = int(tab.evaluate("document.querySelector('svg.journey-map').dataset.cells"))
    boxes = json.loads(tab.evaluate(CARD_BOXES))
    assert len(boxes) == cells > 0
    width = tab.evaluate("document.querySelector('svg.journey-map').viewBox.baseVal.width")
    for name, _, x, _y, w, h in boxes:
        assert w > 100 and h > 50 and x >= 0 and x + w <= width, name  # drawn, inside the map
    assert any(pain == "true" for _, pain, *_ in boxes)  # brew-c3's planted fault
    # no two cards overlap
    rects = [(x, y, x + w, y + h) for _, _, x, y, w, h in boxes]
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    print(f"\nscreenshot journey map: {tab.screenshot(SCREENSHOTS / 'dashboard-journey-map.png')}")


def test_the_export_opens_as_an_svg_document(admin_tab, live_url) -> None:  # noqa: F811
    page = admin_tab.open(f"{live_url}/dashboard/journey-map")
    assert not page.errors, page.errors
    href = admin_tab.evaluate("document.querySelector('a[download]').getAttribute('href')")
    assert href == "/dashboard/journey-map/svg"
    image = admin_tab.open(live_url + href)
    assert not image.errors, image.errors
    assert admin_tab.evaluate("document.documentElement.namespaceURI") == "http://www.w3.org/2000/svg"
    assert admin_tab.evaluate("document.querySelectorAll('g.touchpoint').length") > 0
    assert admin_tab.evaluate("document.querySelectorAll('g.stage').length") == 3
    print(f"\nscreenshot journey map svg: {admin_tab.screenshot(SCREENSHOTS / 'journey-map.png')}")

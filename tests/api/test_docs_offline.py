"""`/docs` and `/redoc` work without internet: every script, style and icon they load comes from this server,
served from files installed with a Python package (issue 11: Swagger UI from a CDN was a blank page offline)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("page", "needs"), [
    ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})])
def test_docs_pages_load_only_same_origin_assets_and_they_are_served(test_db_api, page: str, needs: set[str]) -> None:
    client = test_db_api.client
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text, "an off-site reference"
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert {ref.rsplit("/", 1)[-1] for ref in refs} >= needs, refs
    for ref in refs:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc and ref.startswith("/"), ref
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 1000, ref
    spec = re.search(r"""(?:url: '|spec-url=")(/[^'"]+)""", r.text)
    assert spec and client.get(spec.group(1)).json()["info"]["title"]


def test_the_swagger_bundle_is_the_real_one(test_db_api) -> None:
    js = test_db_api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "SwaggerUIBundle" in js.text and len(js.content) > 500_000

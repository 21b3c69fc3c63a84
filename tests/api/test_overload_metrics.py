"""Heavy-slot 429s and pool-timeout 503s are counted in /metrics by reason and route, from the API and the
dashboard alike (issue 11); other 429s (failed-auth throttling) are not counted as overload."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from cxp.api.app import create_app
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration


def _overload(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    return {(reason, route): float(value) for reason, route, value in re.findall(
        r'^cxp_api_overload_total\{reason="(\w+)",route="([^"]*)"\} (\S+)$', text, re.M)}


def test_heavy_slot_refusals_are_counted_on_api_and_dashboard(stack) -> None:
    settings = stack.model_copy(update={"api": stack.api.model_copy(update={
        "heavy_per_key": 1, "cache_ttl_s": 0.0, "auth_fail_limit": 2, "session_purge_s": 0})})
    with connect(stack.db) as conn:
        key = create_key(conn, name="pytest overload", role="product")
    headers = {"Authorization": f"Bearer {key.token}"}
    with TestClient(create_app(settings)) as client:
        assert _overload(client) == {}
        with client.app.state.heavy_slots.hold(key.key.key_id):  # the key's one slot is busy
            api = client.get("/v1/experience/health", headers=headers, params={"level": "fleet"})
            page = client.get("/dashboard/health", headers=headers)
        assert api.status_code == 429 and page.status_code == 429, (api.text, page.text[:300])
        # failed-auth throttling is a 429 too, but not overload
        for _ in range(3):
            client.get("/v1/experience/health", headers={"Authorization": "Bearer cxp_000000000000_" + "z" * 43})
        assert _overload(client) == {("heavy_slots", "/v1/experience/health"): 1.0,
                                     ("heavy_slots", "/dashboard/health"): 1.0}
        # with the slot free again the same requests are served and nothing more is counted
        assert client.get("/v1/experience/health", headers=headers, params={"level": "fleet"}).status_code == 200
        assert sum(_overload(client).values()) == 2.0

"""Ingest operations through the API, fed by a real gateway over the real broker."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import recent

pytestmark = pytest.mark.integration


def test_status_shows_gateway_rates_and_dead_letters(db, registered, publisher, start_gateway, settings,
                                                      test_db_api) -> None:
    gw = start_gateway()
    ts = recent(5)
    good = [(publisher.topic(d), batch_payload([usage(i, ts), usage(i + 100, ts)])) for i, d in enumerate(registered)]
    bad = [(publisher.topic("dev-000"), b"{not json"), (publisher.topic("ghost-1"), batch_payload([usage(1, ts)]))]
    assert publisher.publish(good + bad) == len(good) + len(bad)
    gateway_id = settings.gateway.client_id

    def reported() -> dict | None:
        body = test_db_api.get("/v1/ingest/status?window_s=10").json()
        mine = [g for g in body["gateways"] if g["gateway_id"] == gateway_id]
        if mine and mine[0]["counters"]["events_stored"] == 2 * len(registered):
            return body
        return None

    assert wait_for(lambda: reported() is not None, timeout=30), gw.log()[-2000:]
    body = reported()
    mine = next(g for g in body["gateways"] if g["gateway_id"] == gateway_id)
    assert mine["reporting"] and mine["counters"]["dead_lettered"] == 2
    assert body["dead_letters_by_reason"] == {reason: 1 for reason in body["dead_letters_by_reason"]}
    assert len(body["dead_letters_by_reason"]) == 2
    assert body["storage"]["latest_event_at"] is not None
    letters = test_db_api.get("/v1/ingest/dead-letters").json()
    assert letters["total"] == 2
    assert {d["device_id"] for d in letters["items"]} == {"dev-000", "ghost-1"}
    assert all(d["reason"] and d["detail"] for d in letters["items"])
    only = test_db_api.get("/v1/ingest/dead-letters?device=ghost-1").json()
    assert only["total"] == 1 and json.loads(only["items"][0]["payload_preview"])["events"][0]["seq"] == 1
    # a second report later gives a rate over the window
    assert wait_for(lambda: next(g for g in test_db_api.get("/v1/ingest/status?window_s=10").json()["gateways"]
                                 if g["gateway_id"] == gateway_id)["events_per_s"] is not None, timeout=30)
    assert gw.stop() == 0

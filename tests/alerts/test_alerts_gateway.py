"""End to end: telemetry over MQTT → the real gateway → rollup refresh → its alert hook → a signed webhook."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from tests.alerts.receiver import Receiver
from tests.alerts.test_alerts_db import SECRET, _verified, alert_db  # noqa: F401 (fixture)
from tests.fixtures.gateway import wait_for
from tests.fixtures.mqtt import batch_payload, usage

pytestmark = pytest.mark.integration


def _inside_one_hour(margin_s: float = 75.0) -> datetime:
    """A time whose hourly bucket is still the current one when the gateway evaluates, within `margin_s`.

    A touchpoint rule's window is the current hourly bucket (`window_h=1`): events planted before the hour
    turns are baseline by the time they are evaluated, so wait for the new hour when it is that close.
    """
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    left = (hour + timedelta(hours=1) - now).total_seconds()
    if left < margin_s:
        time.sleep(left + 1)
        now = datetime.now(UTC)
        hour = now.replace(minute=0, second=0, microsecond=0)
    return max(hour, now - timedelta(seconds=30))


def test_planted_failure_reaches_the_webhook_once(alert_db, settings, publisher, tmp_path):  # noqa: F811
    from tests.fixtures import gateway as gw_fixture

    (tmp_path / "ops.secret").write_bytes(SECRET)
    receiver = Receiver().start()
    try:
        rules = {"rules": [{"name": "brew-fails", "scope": {"product_id": "test-p1", "touchpoint": "brew"},
                            "params": {"kind": "touchpoint", "min_n": 20, "max_failure_rate": 0.2},
                            "channels": [{"url": receiver.url, "secret_ref": "ops"}]}]}
        repository.import_rules(alert_db, rules=list(parse_ruleset(json.dumps(rules)).rules))
        gw_settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(
            update={"secrets_dir": tmp_path})})
        gw = gw_fixture.GatewayProcess(gw_settings, tmp_path)
        try:
            now = _inside_one_hour()
            items = []
            for d in range(5):
                events = [usage(i, now + timedelta(milliseconds=i), success=i % 2 == 0) for i in range(10)]
                items.append((f"{settings.mqtt.topic_prefix}/dev-00{d}/telemetry",
                              batch_payload(events, device_id=f"dev-00{d}")))
            started = time.monotonic()
            publisher.publish(items)
            assert wait_for(lambda: len(receiver.got) >= 1, timeout=60), gw.log()[-3000:]
            elapsed = time.monotonic() - started
            time.sleep(3)  # several more refreshes and evaluations: still one notification
        finally:
            assert gw.stop() == 0
        [doc] = _verified(receiver)
        assert doc["type"] == "alert.opened" and doc["alert"]["entity"] == "test-p1/brew"
        assert doc["alert"]["values"]["n"] == 50 and doc["alert"]["values"]["success_rate"] == 0.5
        assert len(repository.list_alerts(alert_db)) == 1
        print(f"event → webhook: {elapsed:.2f} s (rollup interval {settings.gateway.rollup_interval_s} s)")
    finally:
        receiver.stop()

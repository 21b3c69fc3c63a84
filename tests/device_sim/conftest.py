"""Shared fleets for the device simulator tests (built once per session; building is deterministic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cxp.device_sim import Fleet, build_fleet
from cxp.device_sim.behaviour import build_event, iter_records
from cxp.device_sim.fleet import to_ms

START = datetime(2025, 3, 3, 6, 30, tzinfo=UTC)


@pytest.fixture(scope="session")
def small_fleet() -> Fleet:
    """40 devices over 10 days: enough for every event kind, quick to generate."""
    return build_fleet(seed=11, devices=40, start=START, days=10)


@pytest.fixture(scope="session")
def churn_fleet() -> Fleet:
    """A fleet long enough for churners to fade out."""
    return build_fleet(seed=5, devices=400, start=START, days=60)


@pytest.fixture(scope="session")
def churn_timelines(churn_fleet: Fleet) -> dict[str, list[Any]]:
    """The churn fleet's usage, feedback and lifecycle events per device id (heartbeats left out)."""
    # Straight from the records, so the many heartbeats never become models.
    end = to_ms(churn_fleet.end)
    return {
        d.device_id: [
            build_event(r) for r in iter_records(fleet=churn_fleet, device=d, end_ms=end) if r[1]["kind"] != "state"
        ]
        for d in churn_fleet.devices
    }


@pytest.fixture(scope="session")
def planted_fleet() -> Fleet:
    """A fleet with a fault planted on the coffee machine's app dashboard."""
    return build_fleet(seed=21, devices=240, start=START, days=30, error_prone=("brew-c3", "app_dashboard"))


class FakePublisher:
    """Records what would be published; always connected, acknowledges everything at once."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))

    def try_publish(self, topic: str, payload: bytes) -> bool:
        self.publish(topic, payload)
        return True

    def wait_connected(self, timeout_s: float) -> bool:
        return True

    def wait_all_acked(self, timeout_s: float) -> bool:
        return True


@pytest.fixture
def fake_publisher() -> FakePublisher:
    """A broker-free publisher."""
    return FakePublisher()

"""Service helpers shared by the views."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from cxp.analytics.service._common import empty_window


@pytest.mark.parametrize("zone", ["Etc/GMT-14", "Etc/GMT+12"])  # together: a local date ≠ UTC's at every hour
def test_the_empty_window_is_todays_utc_date_in_any_machine_zone(monkeypatch, zone):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        window = empty_window()
        today = datetime.now(UTC).date()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert window.start == window.end == window.as_of == today

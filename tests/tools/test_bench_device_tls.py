"""`cxp bench device-tls` on a small fleet: every mode connects every device and delivers every message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxp.tools.bench.device_tls import main
from tests.identity.broker import MOSQUITTO

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (cxp stack up)")]


def test_the_device_tls_bench_measures_all_three_modes(capsys) -> None:
    main(["--devices", "30", "--messages", "3", "--json"])
    out = capsys.readouterr().out
    results = json.loads(out[out.index("["):])
    assert [r["mode"] for r in results] == ["plain", "token+TLS", "mTLS"]
    for r in results:
        assert r["connected"] == 30 and r["acked"] == 90 and r["rejected"] == 0 and r["delivered"] == 90, r
        assert r["connects_per_s"] > 0 and r["messages_per_s"] > 0
    assert "×plain" in out

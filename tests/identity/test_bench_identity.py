"""The identity benchmark's MQTT v5 client against a real Mosquitto: accepted and refused CONNECTs count right."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxp.identity.tokens import hash_secret, new_secret, write_password_file
from cxp.tools.bench.identity_broker import PrivateBroker, burst, connect_once
from tests.identity.broker import MOSQUITTO

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (cxp stack up)")]


def test_a_burst_counts_accepted_connects_and_the_broker_refuses_wrong_secrets(tmp_path: Path) -> None:
    creds = [(f"dev-{i}", new_secret()) for i in range(3)]
    write_password_file(tmp_path / "passwd", [(u, hash_secret(s)) for u, s in creds])
    broker = PrivateBroker(tmp_path, f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}")
    try:
        result = burst(broker, connects=12, workers=4, context=None, credentials=creds)
        assert (result.accepted, result.refused) == (12, 0)
        assert result.broker_cpu_s >= 0
        assert connect_once(port=broker.port, client_id="x", context=None, username="dev-0",
                            password=creds[1][1]) == 0x87  # MQTT v5 "not authorized"
        assert burst(broker, connects=2, workers=2, context=None, credentials=None).refused == 2  # anonymous
    finally:
        broker.stop()

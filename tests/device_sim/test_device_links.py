"""Device credentials, the reconnect backoff, and the uplink's per-device path (no broker; see tests/identity)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from cxp.device_sim import ConfigError, Uplink
from cxp.device_sim.credentials import CredentialKind, DeviceCredential
from cxp.device_sim.links import ConnectionLoop, backoff_s

CA = Path("/nonexistent/ca.crt")


def test_a_token_credential_keeps_its_secret_out_of_repr() -> None:
    credential = DeviceCredential.token(device_id="dev-1", secret="s3cret-value", ca_file=CA, host="127.0.0.1",
                                        port=18883)
    assert credential.kind is CredentialKind.TOKEN and credential.client_id == "dev-1"
    assert isinstance(credential.secret, SecretStr)
    assert "s3cret-value" not in repr(credential)


def test_a_rotation_username_is_the_device_id_with_a_suffix_and_is_the_client_id() -> None:
    credential = DeviceCredential.token(device_id="dev-1", secret="x", ca_file=CA, host="127.0.0.1", port=1,
                                        username="dev-1~2")
    assert credential.client_id == "dev-1~2"
    with pytest.raises(ConfigError, match="not device"):
        DeviceCredential.token(device_id="dev-1", secret="x", ca_file=CA, host="127.0.0.1", port=1,
                               username="dev-2")


def test_a_certificate_credential_needs_its_files_and_no_secret() -> None:
    credential = DeviceCredential.certificate(device_id="dev-1", cert_file=Path("c.crt"), key_file=Path("c.key"),
                                              ca_file=CA, host="127.0.0.1", port=18884)
    assert credential.client_id == "dev-1" and credential.username is None
    with pytest.raises(ConfigError):
        DeviceCredential(kind=CredentialKind.CERTIFICATE, device_id="dev-1", ca_file=CA, host="h", port=1,
                         cert_file=Path("c.crt"))
    with pytest.raises(ConfigError):
        DeviceCredential.token(device_id="dev-1", secret="x", ca_file=CA, host="h", port=0)


def test_missing_tls_files_are_a_clear_config_error() -> None:
    credential = DeviceCredential.token(device_id="dev-1", secret="x", ca_file=CA, host="127.0.0.1", port=1)
    with ConnectionLoop() as loop, pytest.raises(ConfigError, match="cannot load its TLS files"):
        loop.open(credential)


def test_the_backoff_grows_and_stays_bounded() -> None:
    delays = [backoff_s(n, initial_s=0.5, max_s=30.0) for n in range(1, 40)]
    assert all(0 < d <= 30.0 for d in delays)
    assert delays[0] <= 1.0 and max(delays[-5:]) == 30.0


class Link:
    """A fake device connection that is up or down."""

    def __init__(self, up: bool) -> None:
        self.up = up
        self.messages: list[tuple[str, bytes]] = []

    def try_publish(self, topic: str, payload: bytes) -> bool:
        if self.up:
            self.messages.append((topic, payload))
        return self.up

    def wait_connected(self, timeout_s: float) -> bool:
        return self.up

    def wait_all_acked(self, timeout_s: float) -> bool:
        return True


def _encode(*, device_id, sent_at, events) -> bytes:
    return json.dumps({"device": device_id, "seqs": [e["seq"] for e in events]}).encode()


def _upload(uplink: Uplink, device: str, seqs: range) -> None:
    uplink.upload(device_id=device, topic=f"devices/{device}/telemetry",
                  events=[{"seq": s, "kind": "usage"} for s in seqs], sent_at=datetime.now(UTC))


def test_a_device_whose_connection_is_down_keeps_its_messages_while_the_others_send() -> None:
    links = {"a": Link(up=True), "b": Link(up=False)}
    uplink = Uplink(publishers=links, max_events_per_message=2, encode=_encode)
    for device in ("b", "a"):
        _upload(uplink, device, range(0, 6))
    assert len(links["a"].messages) == 3 and links["b"].messages == []
    assert uplink.batcher("b").buffered_messages == 3 and uplink.buffered_messages == 3
    assert uplink.finish(timeout_s=0.3) == 3  # still down: nothing lost, nothing sent
    links["b"].up = True
    assert uplink.finish(timeout_s=5) == 0
    assert [json.loads(p)["seqs"] for _, p in links["b"].messages] == [[0, 1], [2, 3], [4, 5]]
    assert all(t == "devices/b/telemetry" for t, _ in links["b"].messages)
    assert uplink.dropped_messages == 0


def test_per_device_publishing_refuses_a_device_without_a_connection() -> None:
    uplink = Uplink(publishers={"a": Link(up=True)}, encode=_encode)
    with pytest.raises(ConfigError, match="no connection of its own"):
        _upload(uplink, "z", range(0, 1))


def test_the_uplink_takes_one_shared_publisher_or_one_per_device() -> None:
    with pytest.raises(ConfigError):
        Uplink()
    with pytest.raises(ConfigError):
        Uplink(publisher=Link(up=True), publishers={"a": Link(up=True)})

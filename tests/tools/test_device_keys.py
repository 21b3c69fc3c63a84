"""The simulated devices' key store against the real stack: own credentials, reused while active, over real TLS."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest

from cxp.device_sim import build_fleet
from cxp.identity.broker import GATEWAY_ACCOUNT, service_secret
from cxp.identity.service import revoke_credential
from cxp.tools.device_keys import credential_kind, equip_fleet
from cxp.tools.fleet import register_fleet
from cxp.tools.simulate import simulate_fleet
from tests.stack.clients import Client, wait_until

pytestmark = pytest.mark.integration


def test_credential_kinds_mix_certificates_and_tokens() -> None:
    kinds = [credential_kind(i, certificate_every=5) for i in range(10)]
    assert kinds.count("certificate") == 2 and kinds[0] == "certificate"
    assert {credential_kind(i, certificate_every=0) for i in range(5)} == {"token"}


def test_devices_keep_their_credentials_until_revoked_and_publish_as_themselves(settings, db, tmp_path) -> None:
    start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    fleet = build_fleet(seed=3, devices=5, start=start, days=1)
    ids = [d.device_id for d in fleet.devices]
    register_fleet(db, fleet=fleet)
    store = tmp_path / "keys"

    creds, report = equip_fleet(conn=db, settings=settings, device_ids=ids, store=store)
    assert (report.reused, report.new_tokens, report.new_certificates) == (0, 4, 1)
    assert creds[ids[0]].cert_file is not None and creds[ids[1]].secret is not None
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in store.iterdir())
    secret = creds[ids[1]].secret.get_secret_value()
    stored = db.execute("SELECT string_agg(coalesce(secret_hash, ''), ' ') FROM device_credentials").fetchone()[0]
    assert secret not in stored and "$7$" in stored  # the registry holds hashes only

    again, report = equip_fleet(conn=db, settings=settings, device_ids=ids, store=store)
    assert (report.reused, report.new_tokens, report.new_certificates) == (5, 0, 0)
    assert again[ids[1]].secret.get_secret_value() == secret

    revoke_credential(conn=db, settings=settings, device_id=ids[1], reason="test")
    after, report = equip_fleet(conn=db, settings=settings, device_ids=ids, store=store)
    assert (report.reused, report.new_tokens) == (4, 1)
    assert after[ids[1]].secret.get_secret_value() != secret

    collector = Client(port=settings.mqtt.port, client_id=f"keys-{settings.mqtt.topic_prefix}",
                       username=GATEWAY_ACCOUNT, password=service_secret(settings, GATEWAY_ACCOUNT))
    assert collector.connect()
    try:
        assert collector.subscribe(f"{settings.mqtt.topic_prefix}/+/telemetry") is not None
        _, published = simulate_fleet(settings=settings, devices=5, days=1, seed=3, mode="backfill", start=start,
                                      duration_s=0, speed=1, error_prone=None, progress=False, credentials=after)
        assert published.all_acked and published.messages > 0
        assert wait_until(lambda: len(collector.messages) >= published.messages, 30)
        assert {topic.split("/")[1] for topic in collector.messages} == set(ids)
    finally:
        collector.close()

"""The pure builders of Mosquitto auth material: hash format, ACL file, dynamic-security batches and state."""

from __future__ import annotations

import base64
import ipaddress
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cxp.tools.bench.broker_auth.connect import write_test_tls
from cxp.tools.bench.broker_auth.files import (
    Credential,
    acl_file_text,
    batched,
    device_credentials,
    dynsec_device_commands,
    dynsec_state,
    password_line,
    pbkdf2_parts,
)

# Written by `mosquitto_ctrl dynsec init FILE admin adminpw` (Mosquitto 2.0.11): an independent oracle.
MOSQUITTO_SALT = "63ixOluMa30KoFbu"
MOSQUITTO_HASH = "vrmyhQyUvO+JrxTPjtvkxndICA60sIHJ10MJE9Bt3ZSs015JKAUpjFZiGG07/5xpmnqL+WCOpwlEf1EM4cPIjQ=="


def test_pbkdf2_matches_a_hash_mosquitto_made() -> None:
    """Same secret + salt → the very hash Mosquitto's own tool stored."""
    assert pbkdf2_parts("adminpw", salt=base64.b64decode(MOSQUITTO_SALT)) == (MOSQUITTO_SALT, MOSQUITTO_HASH)
    assert pbkdf2_parts("adminpw!", salt=base64.b64decode(MOSQUITTO_SALT))[1] != MOSQUITTO_HASH


def test_password_line_is_mosquitto_7_format_with_a_fresh_salt() -> None:
    """`user:$7$101$<salt>$<hash>`; two lines for the same secret differ (random salt), never contain it."""
    cred = Credential("dev000001", "s3cret-value")
    a, b = password_line(cred), password_line(cred)
    pattern = r"dev000001:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}=="
    assert re.fullmatch(pattern, a) and re.fullmatch(pattern, b)
    assert a != b
    assert "s3cret-value" not in a


def test_acl_file_lets_devices_write_only_their_own_topic_and_the_gateway_only_read() -> None:
    """One pattern line for the whole fleet; the gateway block has a read rule and no write rule."""
    text = acl_file_text(gateway_user="cxp-gateway")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "pattern write devices/%u/telemetry"
    gateway_block = lines[lines.index("user cxp-gateway") + 1:]
    assert gateway_block == ["topic read devices/+/telemetry"]
    assert not any(line.startswith(("topic write", "topic readwrite", "pattern readwrite")) for line in lines)


def test_device_credentials_are_unique_and_deterministic() -> None:
    """Same count → same fleet; names and secrets unique."""
    creds = device_credentials(1000)
    assert creds == device_credentials(1000)
    assert len({c.username for c in creds}) == len({c.secret for c in creds}) == 1000
    assert device_credentials(3, seed="other")[0].secret != creds[0].secret


def test_batches_hold_at_most_size_commands_and_keep_every_one() -> None:
    """11 commands in batches of 4 → 4, 4, 3, in order; a size below 1 is refused."""
    commands = [{"command": "createClient", "username": f"d{i}"} for i in range(11)]
    payloads = [json.loads(p)["commands"] for p in batched(commands, 4)]
    assert [len(p) for p in payloads] == [4, 4, 3]
    assert [c for p in payloads for c in p] == commands
    with pytest.raises(ValueError):
        list(batched(commands, 0))


def test_dynsec_device_role_names_the_device_literally() -> None:
    """2.0.11 does not substitute %u in ACL topics, so each device's role carries its own topic."""
    role, client = dynsec_device_commands(Credential("dev7", "x"), per_device_role=True)
    assert role["acls"] == [{"acltype": "publishClientSend", "topic": "devices/dev7/telemetry", "allow": True}]
    assert client["roles"][0]["rolename"] == role["rolename"]
    (shared,) = dynsec_device_commands(Credential("dev7", "x"), per_device_role=False)
    assert shared["groups"] == [{"groupname": "devices", "priority": -1}]


def test_dynsec_state_adds_hashed_clients_without_touching_the_base() -> None:
    """Clients carry a salt + hash (never the secret) and their own role; the base state is unchanged."""
    base = {"clients": [{"username": "admin"}], "roles": [], "defaultACLAccess": {"publishClientSend": False}}
    state = dynsec_state(base, [Credential("dev1", "topsecret")], per_device_role=True)
    assert base["clients"] == [{"username": "admin"}] and base["roles"] == []
    client = state["clients"][1]
    assert client["username"] == "dev1" and "topsecret" not in json.dumps(state)
    assert pbkdf2_parts("topsecret", salt=base64.b64decode(client["salt"]))[1] == client["password"]
    assert state["roles"][0]["acls"][0]["topic"] == "devices/dev1/telemetry"


def test_throwaway_tls_material_is_a_ca_signed_server_certificate_for_loopback(tmp_path) -> None:
    """The benchmark's server certificate is issued by its CA (signature checks) and names 127.0.0.1."""
    ca_path, cert_path, key_path = write_test_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert b"PRIVATE KEY" in key_path.read_bytes()

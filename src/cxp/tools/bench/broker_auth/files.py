"""Pure builders of Mosquitto auth material: password lines, ACL files, dynamic-security commands and state."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from cxp.identity.tokens import DEFAULT_ITERATIONS, hash_secret, parse_hash, password_file_line

PBKDF2_ITERATIONS = DEFAULT_ITERATIONS
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
DYNSEC_RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"


@dataclass(frozen=True)
class Credential:
    """One MQTT username and its secret (benchmark fleets only; real secrets are never kept in clear)."""

    username: str
    secret: str


def device_credentials(count: int, *, prefix: str = "dev", seed: str = "bench") -> list[Credential]:
    """Deterministic usernames and secrets for a benchmark fleet of `count` devices."""
    width = max(6, len(str(count)))
    creds = []
    for i in range(count):
        name = f"{prefix}{i:0{width}d}"
        secret = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:24]
        creds.append(Credential(name, secret))
    return creds


def pbkdf2_parts(secret: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> tuple[str, str]:
    """(base64 salt, base64 PBKDF2-SHA512 hash) as Mosquitto stores them (dynamic security keeps them apart)."""
    _, salt_raw, digest = parse_hash(hash_secret(secret, iterations=iterations, salt=salt))
    return base64.b64encode(salt_raw).decode(), base64.b64encode(digest).decode()


def password_line(cred: Credential, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """One `password_file` line in Mosquitto 2.0's `$7$` format (what `mosquitto_passwd` writes)."""
    line = password_file_line(username=cred.username,
                              password_hash=hash_secret(cred.secret, iterations=iterations, salt=salt))
    return line.rstrip("\n")


def password_file_text(creds: Iterable[Credential]) -> str:
    """A whole `password_file`."""
    return "".join(password_line(c) + "\n" for c in creds)


def acl_file_text(*, gateway_user: str, prefix: str = "devices") -> str:
    """The ACL file: every device writes only its own telemetry topic; the gateway reads all and writes nothing."""
    # A `pattern` line applies to every authenticated user, so the file does not grow with the fleet;
    # it applies to the gateway too, so a service username must never be a valid device id.
    return (
        "# Generated: devices publish only as themselves; the gateway only reads.\n"
        f"pattern write {prefix}/%u/telemetry\n"
        f"user {gateway_user}\n"
        f"topic read {prefix}/+/telemetry\n"
    )


def dynsec_create_client(cred: Credential, *, rolename: str | None = None, groupname: str | None = None) -> dict:
    """A `createClient` command; the broker hashes the password itself."""
    cmd: dict = {"command": "createClient", "username": cred.username, "password": cred.secret}
    if rolename is not None:
        cmd["roles"] = [{"rolename": rolename, "priority": -1}]
    if groupname is not None:
        cmd["groups"] = [{"groupname": groupname, "priority": -1}]
    return cmd


def dynsec_device_role(username: str, *, prefix: str = "devices") -> dict:
    """A `createRole` command for one device: publish to its own telemetry topic only."""
    return {
        "command": "createRole",
        "rolename": f"device-{username}",
        "acls": [{"acltype": "publishClientSend", "topic": f"{prefix}/{username}/telemetry", "allow": True}],
    }


def dynsec_gateway_commands(cred: Credential, *, prefix: str = "devices") -> list[dict]:
    """Role + client for the gateway: subscribe to every device's telemetry, publish nothing."""
    return [
        {
            "command": "createRole",
            "rolename": "gateway",
            "acls": [
                {"acltype": "subscribePattern", "topic": f"{prefix}/+/telemetry", "allow": True},
                {"acltype": "publishClientReceive", "topic": f"{prefix}/+/telemetry", "allow": True},
            ],
        },
        dynsec_create_client(cred, rolename="gateway"),
    ]


def dynsec_device_commands(cred: Credential, *, per_device_role: bool, prefix: str = "devices") -> list[dict]:
    """Commands that create one device: its own role (2.0.11 has no `%u` in ACL topics) or a shared group."""
    if per_device_role:
        return [dynsec_device_role(cred.username, prefix=prefix),
                dynsec_create_client(cred, rolename=f"device-{cred.username}")]
    return [dynsec_create_client(cred, groupname="devices")]


def batched(commands: Iterable[dict], size: int) -> Iterator[str]:
    """JSON payloads for the control topic with at most `size` commands each."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batch: list[dict] = []
    for cmd in commands:
        batch.append(cmd)
        if len(batch) == size:
            yield json.dumps({"commands": batch})
            batch = []
    if batch:
        yield json.dumps({"commands": batch})


def dynsec_state(
    base: dict, creds: Sequence[Credential], *, per_device_role: bool, prefix: str = "devices"
) -> dict:
    """`base` (a state file made by `mosquitto_ctrl dynsec init`) plus `creds` as clients, for offline bulk load."""
    state = json.loads(json.dumps(base))
    for cred in creds:
        salt_b64, hash_b64 = pbkdf2_parts(cred.secret)
        client = {"username": cred.username, "password": hash_b64, "salt": salt_b64,
                  "iterations": PBKDF2_ITERATIONS, "roles": [], "groups": []}
        if per_device_role:
            role = dynsec_device_role(cred.username, prefix=prefix)
            state.setdefault("roles", []).append(
                {"rolename": role["rolename"], "acls": [{**a, "priority": 0} for a in role["acls"]]})
            client["roles"] = [{"rolename": role["rolename"]}]
        state.setdefault("clients", []).append(client)
    return state

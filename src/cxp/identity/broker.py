"""The broker's view of identities: password and ACL files rendered from credentials, reload, and disconnect.

Mosquitto checks device tokens itself (`$7$` lines of a password file) and device certificates itself (CA + CRL),
so what the platform decides reaches the broker as files plus a SIGHUP: the reload re-checks every connected token
client against the new password file and drops those no longer in it. A certificate session is not re-verified
on reload, so revoking a certificate also takes its session over (same client id: the broker forces client id =
username = CN on the device listeners) with the admin service account, which disconnects it; the reconnect then
meets the reloaded CRL.
"""

from __future__ import annotations

import os
import pwd
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cxp.core.config import Settings
from cxp.identity.errors import BadParameter, IdentityError
from cxp.identity.files import DIR_MODE, PRIVATE_MODE
from cxp.identity.tokens import check_username, hash_secret, new_secret, parse_hash

# The platform's own accounts on the loopback service listener; device ids may never take these names.
GATEWAY_ACCOUNT = "cxp-gateway"
ADMIN_ACCOUNT = "cxp-admin"
LOADER_ACCOUNT = "cxp-loader"
SERVICE_ACCOUNTS = (GATEWAY_ACCOUNT, ADMIN_ACCOUNT, LOADER_ACCOUNT)
ROTATION_MARK = "~"  # `<device id>~<n>`: never in a device id, so it cannot collide with one


class BrokerUnreachable(IdentityError):
    """The broker is not running or did not answer the platform's request."""


@dataclass(frozen=True)
class DeviceLogin:
    """An active token as the broker sees it: a password line, and an ACL block for a rotation username."""

    username: str
    device_id: str
    password_hash: str


@dataclass(frozen=True)
class BrokerPaths:
    """Where the local broker keeps its config, pid and identity files."""

    base: Path

    @classmethod
    def of(cls, settings: Settings) -> BrokerPaths:
        """The broker directory of this stack."""
        return cls(settings.stack.dir / "mosquitto")

    @property
    def pid(self) -> Path:
        """Mosquitto's pid file."""
        return self.base / "mosquitto.pid"

    @property
    def device_passwords(self) -> Path:
        """Token devices' password file (token listener)."""
        return self.base / "devices.passwd"

    @property
    def device_acl(self) -> Path:
        """Devices' ACL (both device listeners)."""
        return self.base / "devices.acl"

    @property
    def service_passwords(self) -> Path:
        """Service accounts' password file (loopback listener)."""
        return self.base / "services.passwd"

    @property
    def service_acl(self) -> Path:
        """Service accounts' ACL (loopback listener)."""
        return self.base / "services.acl"

    @property
    def crl(self) -> Path:
        """The broker's copy of the platform CA's CRL (certificate listener)."""
        return self.base / "tls" / "crl.pem"


def rotation_username(device_id: str, generation: int) -> str:
    """The broker username of a device's token number `generation` (1: the device id itself)."""
    check_username(device_id)
    if generation < 1:
        raise BadParameter("a token generation starts at 1")
    return device_id if generation == 1 else f"{device_id}{ROTATION_MARK}{generation}"


def check_device_account(device_id: str) -> str:
    """A device id the broker can hold as a username and no service account uses (registry: call before creating)."""
    check_username(device_id)
    if device_id in SERVICE_ACCOUNTS:
        raise BadParameter(f"{device_id!r} is reserved for a platform service account")
    return device_id


def _check_login(login: DeviceLogin) -> None:
    check_device_account(login.device_id)
    base, mark, generation = login.username.partition(ROTATION_MARK)
    if base != login.device_id or (mark and not generation.isdigit()):
        raise BadParameter(f"username {login.username!r} does not belong to device {login.device_id!r}")
    parse_hash(login.password_hash)


def render_device_passwords(logins: Iterable[DeviceLogin]) -> str:
    """The token listener's password file: one `$7$` line per active token."""
    lines: dict[str, str] = {}
    for login in logins:
        _check_login(login)
        if login.username in lines:
            raise BadParameter(f"username {login.username!r} appears twice")
        lines[login.username] = f"{login.username}:{login.password_hash}\n"
    return "".join(lines.values())


def render_device_acl(logins: Iterable[DeviceLogin]) -> str:
    """The device listeners' ACL: each device writes only its own telemetry topic (any topic prefix)."""
    # One pattern serves every device whose username is its id (certificates: CN; first tokens); only a rotation's
    # second username needs a block of its own, so the file stays one line for a fleet that is not rotating.
    parts = ["# Generated by cxp from the credential registry; edits are overwritten.\n",
             "pattern write +/%u/telemetry\n"]
    for login in logins:
        _check_login(login)
        if login.username != login.device_id:
            parts.append(f"\nuser {login.username}\ntopic write +/{login.device_id}/telemetry\n")
    return "".join(parts)


def render_service_acl() -> str:
    """The loopback listener's ACL: the gateway reads all telemetry, the loader writes it, the admin does neither."""
    return ("# Generated by cxp; edits are overwritten.\n"
            f"user {GATEWAY_ACCOUNT}\ntopic read +/+/telemetry\n\n"
            f"user {LOADER_ACCOUNT}\ntopic write +/+/telemetry\n\n"
            f"user {ADMIN_ACCOUNT}\n")


def _broker_owner() -> tuple[int, int] | None:
    """Mosquitto drops to its system user when started as root; its files must then be that user's."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def write_broker_file(path: Path, text: str | bytes, *, owner: tuple[int, int] | None = None) -> None:
    """Replace a file the broker reads in one rename: mode 0600, owned by the broker's user from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    data = text.encode("utf-8") if isinstance(text, str) else text
    owner = owner if owner is not None else _broker_owner()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, PRIVATE_MODE)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def service_secret(settings: Settings, account: str) -> str:
    """A service account's secret, read from `<mqtt.secrets_dir>/<account>.secret`."""
    if account not in SERVICE_ACCOUNTS:
        raise BadParameter(f"{account!r} is not a platform service account")
    path = Path(settings.mqtt.secrets_dir or settings.stack.dir / "secrets") / f"{account}.secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise BrokerUnreachable(f"no secret for service account {account!r} at {path} (run `cxp stack up`)") from exc


def ensure_service_accounts(settings: Settings, paths: BrokerPaths | None = None) -> None:
    """Create each service account's secret once (0600) and write the loopback listener's password file and ACL."""
    paths = paths or BrokerPaths.of(settings)
    secrets_dir = Path(settings.mqtt.secrets_dir or settings.stack.dir / "secrets")
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(secrets_dir, DIR_MODE)
    lines = []
    for account in SERVICE_ACCOUNTS:
        path = secrets_dir / f"{account}.secret"
        if not path.exists():
            write_broker_file(path, new_secret() + "\n", owner=(os.geteuid(), os.getegid()))
        lines.append(f"{account}:{hash_secret(service_secret(settings, account))}\n")
    write_broker_file(paths.service_passwords, "".join(lines))
    write_broker_file(paths.service_acl, render_service_acl())


def write_device_files(settings: Settings, *, logins: Sequence[DeviceLogin], crl_pem: bytes | None = None,
                       paths: BrokerPaths | None = None) -> None:
    """Write the device password file, ACL and (when given) the CRL the broker reads; reload separately."""
    paths = paths or BrokerPaths.of(settings)
    # Render both before writing either, so a bad row leaves the broker's files as they were.
    passwords, acl = render_device_passwords(logins), render_device_acl(logins)
    write_broker_file(paths.device_passwords, passwords)
    write_broker_file(paths.device_acl, acl)
    if crl_pem is not None:
        write_broker_file(paths.crl, crl_pem)


def reload_broker(settings: Settings, paths: BrokerPaths | None = None) -> bool:
    """Ask the running broker to re-read its password files, ACLs and CRL (SIGHUP); False when it is not running."""
    paths = paths or BrokerPaths.of(settings)
    try:
        pid = int(paths.pid.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def disconnect_clients(settings: Settings, *, client_ids: Iterable[str], timeout_s: float = 5.0) -> int:
    """Take over each client id's session with the admin account, which makes the broker drop that client."""
    secret = service_secret(settings, ADMIN_ACCOUNT)
    count = 0
    for client_id in client_ids:
        _take_over(settings, client_id=client_id, secret=secret, timeout_s=timeout_s)
        count += 1
    return count


def _take_over(settings: Settings, *, client_id: str, secret: str, timeout_s: float) -> None:
    connected = threading.Event()
    outcome: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        outcome.append(str(reason_code))
        connected.set()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(ADMIN_ACCOUNT, secret)
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    try:
        client.connect(settings.mqtt.host, settings.mqtt.port, keepalive=10, clean_start=True, properties=props)
    except OSError as exc:
        raise BrokerUnreachable(f"broker at {settings.mqtt.host}:{settings.mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise BrokerUnreachable(f"broker did not answer the admin account within {timeout_s:.0f} s")
        if outcome and outcome[0] != "Success":
            raise BrokerUnreachable(f"broker refused the admin account: {outcome[0]}")
    finally:
        client.disconnect()
        client.loop_stop()


def revoke_sessions(settings: Settings, *, client_ids: Sequence[str], settle_s: float = 0.3) -> int:
    """After a reload, drop these live sessions (certificate clients are not re-checked by a reload)."""
    # The broker handles SIGHUP between two network loop passes; wait so the reconnect meets the new CRL.
    time.sleep(settle_s)
    return disconnect_clients(settings, client_ids=client_ids)

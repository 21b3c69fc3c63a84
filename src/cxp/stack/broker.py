"""The local Mosquitto, secure by default: a loopback listener for service accounts and two TLS listeners for devices.

`provision_broker_identity` makes what the broker reads (CA, server certificate, CRL, service accounts, empty device
files) and copies the TLS files into the broker's directory owned by its user; `broker_conf` renders the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from cxp.core.config import MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES, Settings
from cxp.identity.broker import (
    BrokerPaths,
    ensure_service_accounts,
    render_device_acl,
    write_broker_file,
)
from cxp.identity.errors import BadPem
from cxp.identity.files import PkiPaths, init_ca, load_certificate, load_crl, pem, save_server, write_public
from cxp.identity.pki import DEFAULT_SERVER_HOSTS, CertificateAuthority, build_crl, issue_server_certificate

# A server certificate this close to its end is replaced at `stack up` (devices would refuse it afterwards).
SERVER_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    """The broker's copies of the TLS files (under `<stack>/mosquitto/tls/`, owned by the broker's user)."""

    paths: BrokerPaths

    @property
    def ca(self) -> Path:
        """The platform CA certificate (certificate listener's trust anchor)."""
        return self.paths.base / "tls" / "ca.crt"

    @property
    def cert(self) -> Path:
        """The broker's server certificate."""
        return self.paths.base / "tls" / "server.crt"

    @property
    def key(self) -> Path:
        """The broker's private key."""
        return self.paths.base / "tls" / "server.key"


def server_hosts(settings: Settings) -> tuple[str, ...]:
    """What the server certificate must name: loopback, localhost and the devices' host."""
    return tuple(dict.fromkeys((*DEFAULT_SERVER_HOSTS, settings.mqtt.device_host)))


def _server_current(cert: x509.Certificate, ca: CertificateAuthority, hosts: tuple[str, ...], now: datetime) -> bool:
    try:
        cert.verify_directly_issued_by(ca.certificate)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.InvalidSignature, x509.ExtensionNotFound):
        return False
    have = {str(v) for v in names.get_values_for_type(x509.IPAddress)} | set(names.get_values_for_type(x509.DNSName))
    return set(hosts) <= have and cert.not_valid_after_utc - now > SERVER_RENEW_BEFORE


def _crl_current(crl: x509.CertificateRevocationList, ca: CertificateAuthority, now: datetime) -> bool:
    """Mosquitto refuses every certificate once the CRL's next-update has passed: renew at half its validity."""
    if not crl.is_signature_valid(ca.certificate.public_key()) or crl.next_update_utc is None:
        return False
    half = (crl.next_update_utc - crl.last_update_utc) / 2
    return crl.next_update_utc - now > half


def _current_crl(paths: BrokerPaths, pki: PkiPaths) -> x509.CertificateRevocationList | None:
    # The registry writes the broker's copy on every revocation, so it is the newest; the CA's is the fallback.
    for path in (paths.crl, pki.crl):
        if path.exists():
            try:
                return load_crl(path)
            except BadPem:
                continue
    return None


def provision_broker_identity(settings: Settings, *, now: datetime | None = None) -> bool:
    """Create what is missing or stale (CA, server certificate, CRL, service accounts, device files); True if a TLS
    file the running broker reads changed (a reload picks it up)."""
    moment = now or datetime.now(UTC)
    paths = BrokerPaths.of(settings)
    assert settings.pki.dir is not None  # Settings fills it in from the stack dir
    pki = PkiPaths(settings.pki.dir)
    tls = TlsFiles(paths)
    ca, _ = init_ca(paths=pki, days=settings.pki.ca_days)
    hosts = server_hosts(settings)
    if not (pki.server_cert.exists() and pki.server_key.exists()
            and _server_current(load_certificate(pki.server_cert), ca, hosts, moment)):
        save_server(issue_server_certificate(ca=ca, hosts=hosts, days=settings.pki.server_days, now=moment), pki)
    crl = _current_crl(paths, pki)
    if crl is None or not _crl_current(crl, ca, moment):
        keep = ([r.serial_number for r in crl] if crl is not None
                and crl.is_signature_valid(ca.certificate.public_key()) else [])
        crl = build_crl(ca=ca, revoked=keep, days=settings.pki.crl_days, now=moment)
        write_public(pki.crl, pem(crl))
    changed = False
    for source, target in ((pki.ca_cert.read_bytes(), tls.ca), (pki.server_cert.read_bytes(), tls.cert),
                           (pki.server_key.read_bytes(), tls.key), (pem(crl), paths.crl)):
        if not target.exists() or target.read_bytes() != source:
            write_broker_file(target, source)
            changed = True
    ensure_service_accounts(settings, paths)
    # The registry owns the device files: only an absent one is created (empty: no device can log in yet).
    if not paths.device_passwords.exists():
        write_broker_file(paths.device_passwords, "")
    if not paths.device_acl.exists():
        write_broker_file(paths.device_acl, render_device_acl([]))
    return changed


def broker_log(paths: BrokerPaths) -> Path:
    """The broker's log file (followed by the gateway for connects and denied publishes)."""
    return paths.base / "mosquitto.log"


def broker_conf(settings: Settings, *, user: str | None) -> str:
    """Mosquitto's config: anonymous refused on every listener, per-listener password files and ACLs."""
    paths = BrokerPaths.of(settings)
    tls, data, mqtt = TlsFiles(paths), paths.base / "data", settings.mqtt
    tls_common = f"certfile {tls.cert}\nkeyfile {tls.key}\ntls_version tlsv1.2\n"
    # Denied publishes are logged only at debug level (Mosquitto 2.0 has no counter for them): the gateway follows
    # the log to count them. Its cost is measured in docs/security.md.
    debug = "log_type debug\n" if mqtt.broker_debug_log else ""
    return f"""# Generated by `cxp stack up`; edits are overwritten.
per_listener_settings true
pid_file {paths.pid}
{f"user {user}" if user else ""}
# Persistence keeps queued QoS 1 messages of persistent sessions across a broker restart.
persistence true
persistence_location {data}/
# The whole in-memory store is rewritten at each save (blocking the broker while it writes): a crash loses what
# was acknowledged since the last one; a clean stop (SIGTERM) always saves. Measured: `cxp bench broker-persistence`.
autosave_interval {mqtt.broker_autosave_interval}
autosave_on_changes {"true" if mqtt.broker_autosave_on_changes else "false"}
# The gateway may be away while devices keep publishing: queue a large backlog per session.
max_queued_messages 2000000
max_queued_bytes 0
max_inflight_messages 0
# The contract's maximum: a larger PUBLISH is refused with PUBACK 0x95 (Packet Too Large), the publisher stays
# connected; max_packet_size (a maximal payload + topic and headers) disconnects only what no client may send.
message_size_limit {MAX_PAYLOAD_BYTES}
max_packet_size {MAX_PACKET_BYTES}
persistent_client_expiration 14d
log_dest file {broker_log(paths)}
log_type error
log_type warning
log_type notice
log_type information
{debug}connection_messages true

# Service listener: plain MQTT on loopback, only the platform's own accounts (gateway, admin, loader).
listener {mqtt.port} {mqtt.host}
allow_anonymous false
password_file {paths.service_passwords}
acl_file {paths.service_acl}

# Token listener: TLS 1.2+, username = device id, password = the device's token; client id forced = username.
listener {mqtt.device_tls_port} {mqtt.device_host}
{tls_common}require_certificate false
allow_anonymous false
password_file {paths.device_passwords}
acl_file {paths.device_acl}
use_username_as_clientid true

# Certificate listener: mutual TLS, a certificate of the platform CA not on its CRL; username = CN = device id.
listener {mqtt.device_mtls_port} {mqtt.device_host}
{tls_common}cafile {tls.ca}
crlfile {paths.crl}
require_certificate true
use_identity_as_username true
allow_anonymous false
acl_file {paths.device_acl}
use_username_as_clientid true
"""

"""The one settings object of a process: read from the environment (prefix CXP_) and nowhere else."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[3]


class MqttSettings(BaseModel):
    """Broker connection."""

    host: str = "127.0.0.1"
    port: int = 18830
    keepalive_s: int = 60
    topic_prefix: str = "devices"
    # The listener above is plain MQTT on loopback for the platform's own service accounts (gateway, admin,
    # loader), each with its own secret. Devices connect only to the two TLS listeners below.
    device_host: str = "127.0.0.1"
    # Token listener: TLS, username = device id (or `<device id>~<n>` during a rotation), password = token secret.
    device_tls_port: int = 18883
    # Certificate listener: mutual TLS, identity = the client certificate's CN = device id, CRL checked.
    device_mtls_port: int = 18884
    # Service account secrets, one file `<account>.secret` each (mode 0600); unset: <stack dir>/secrets.
    secrets_dir: Path | None = None
    # The platform CA bundle devices verify the broker with (unset: <pki dir>/ca.crt).
    ca_file: Path | None = None
    # Mosquitto 2.0 reports a denied publish only in its debug log, which the gateway follows to count them;
    # costs broker CPU per message (docs/security.md). Off: denials are refused but not counted.
    broker_debug_log: bool = True
    # The gateway's log follower rotates the broker log (rename to `.1` + SIGHUP) past this size.
    broker_log_max_bytes: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024)
    # Mosquitto rewrites its whole in-memory store (queued messages included) to disk every this many seconds (or,
    # with broker_autosave_on_changes, after this many queued messages and subscription changes); a broker crash
    # loses what was acknowledged since the last save, a clean stop loses nothing. Chosen from the measurements of
    # `cxp bench broker-persistence` (README, "Broker persistence").
    broker_autosave_interval: int = Field(default=10, ge=0)
    broker_autosave_on_changes: bool = False


class DbSettings(BaseModel):
    """TimescaleDB connection."""

    host: str = "127.0.0.1"
    port: int = 15432
    name: str = "cxp"
    user: str = "cxp"
    password: str | None = None
    pool_min: int = 1
    pool_max: int = 4
    # A replicated database (`cxp stack up --ha`): its members as "host:port,host:port,…". Set, writers connect with
    # libpq's multi-host list and target_session_attrs=read-write (whichever member is the primary now), and the API's
    # analytics reads prefer a standby (`read_dsn`) whose replay is at most `read_max_lag_s` behind, else the primary.
    members: str | None = Field(default=None, pattern=r"^[^\s,:]+:\d+(,[^\s,:]+:\d+)*$")
    read_max_lag_s: float = Field(default=10.0, ge=0)

    def _conninfo(self, session_attrs: str | None) -> str:
        if self.members:
            pairs = [m.rsplit(":", 1) for m in self.members.split(",")]
            parts = [f"host={','.join(h for h, _ in pairs)}", f"port={','.join(p for _, p in pairs)}",
                     f"target_session_attrs={session_attrs}"]
        else:
            parts = [f"host={self.host}", f"port={self.port}"]
        parts += [f"dbname={self.name}", f"user={self.user}"]
        if self.password:
            parts.append(f"password={self.password}")
        return " ".join(parts)

    @property
    def dsn(self) -> str:
        """libpq connection string of writers: the primary (of `members` when set)."""
        return self._conninfo("read-write")

    @property
    def read_dsn(self) -> str:
        """libpq connection string of readers: a standby when there is one (the primary otherwise)."""
        return self._conninfo("prefer-standby")


# The contract's largest telemetry message (re-exported by cxp.contract); dead letters keep up to this much.
MAX_PAYLOAD_BYTES = 256 * 1024
# The largest MQTT packet the broker and the gateway take: a maximal payload plus its topic and headers.
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096


class GatewaySettings(BaseModel):
    """Ingest gateway tuning."""

    # The fixed MQTT client id of a single gateway; instance n of a group (`cxp gateway --instances N`) uses
    # `<client_id>-<n>`. Each id is one persistent session at the broker.
    client_id: str = "cxp-gateway"
    # MQTT v5 shared subscription group (`$share/<group>/<prefix>/+/telemetry`): every gateway of the group gets a
    # share of the stream, each message goes to one of them. Empty: a plain subscription (each gateway gets all) —
    # the default for a single `cxp gateway`, because Mosquitto 2.0.11 honours Receive Maximum only there (memory
    # bounded by the window, docs/scaling.md); `--instances`/`--instance` use `cxp-gateways` when this is empty.
    share_group: str = Field(default="", pattern=r"^[^/+#]*$")
    session_expiry_s: int = 7 * 24 * 3600
    # MQTT v5 Receive Maximum: the bounded in-flight window of unacked messages.
    receive_maximum: int = 4000
    batch_max_messages: int = 1000
    batch_max_wait_ms: int = 50
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    # Whole payloads, so a message refused for one event can be replayed with its good ones after a fix.
    dead_letter_payload_cap: int = MAX_PAYLOAD_BYTES
    max_future_skew_s: int = 300
    stats_interval_s: float = 10.0
    rollup_interval_s: float = 5.0
    # The refresh works in batches of this many device-days and pauses after each so that it is busy at most this
    # share of the time: ingest on the same machine keeps its rate while a day of the fleet is caught up.
    rollup_batch_device_days: int = Field(default=2000, gt=0)
    # 0.35, not 0.5: a whole day of 10,000 devices caught up in ~13 s instead of ~12, the gateway beside it at
    # 0.89-1.1 of its rate alone instead of 0.77-0.88 (`cxp bench refresh`, README "Keeping them current").
    rollup_max_busy_share: float = Field(default=0.35, gt=0, le=1)
    # The group's leader (one gateway, elected by an advisory lock) drops raw chunks past `retention_days` this often.
    retention_interval_s: float = Field(default=3600.0, gt=0)
    # The leader brings the kept health rows (migration 031) up to date at most this often after a refresh, in a thread
    # of its own: the weeks late data marked stale, and every device's last 13 weeks at start and when a week is over
    # (0: never; the first viewer of a week then computes and keeps its rows).
    keep_health_interval_s: float = Field(default=300.0, ge=0)
    retry_max_backoff_s: float = 10.0
    # Validation and COPY in a separate process (True) or in a thread of the receiving process.
    writer_process: bool = True
    # Follow the local broker's log (a child process) for connections and denied publishes per broker username.
    follow_broker_log: bool = True


class SimSettings(BaseModel):
    """Device simulator defaults."""

    client_id_prefix: str = "cxp-sim"
    max_events_per_message: int = 50
    # Per device: packed messages kept while the broker is unreachable; past it the oldest are dropped (counted).
    offline_buffer_messages: int = 10_000
    # Per connection: messages published and not yet acknowledged by the broker.
    max_inflight: int = 1000


class ApiSettings(BaseModel):
    """HTTP API and dashboard."""

    host: str = "127.0.0.1"
    port: int = 18000
    # Verified keys are remembered this long, so a revocation takes effect within it.
    key_cache_s: float = 5.0
    # Backtests with more account-months × models than this run as background jobs.
    sync_backtest_limit: int = 200_000
    # ... and backtests above this size (accounts × months × plans: one bill row each) are refused with 422.
    max_backtest_size: int = 20_000_000
    job_workers: int = 2
    # Dead-letter replays (POST /v1/dead-letters/replay) examining more letters or payload bytes than these run as
    # background jobs.
    sync_replay_letters: int = 100
    sync_replay_bytes: int = 4 * 1024 * 1024
    max_page_size: int = 1000
    # Analytics results are reused while the data under them is unchanged, for at most this long (0: off).
    cache_ttl_s: float = 300.0
    # ... and served for this long even when the data changed meanwhile (live ingest refreshes rollups often).
    cache_fresh_s: float = 60.0
    cache_entries: int = 256
    # Request guards (api/guard.py): bodies of /v1 requests are refused with 413 above these sizes; upload
    # routes get their CSV cap plus 1 MiB for multipart framing, so the route's own cap (422) stays the one met.
    max_body_bytes: int = 1 * 1024 * 1024
    max_import_bytes: int = 21 * 1024 * 1024
    # History files uploaded to POST /v1/imports (JSON lines, CSV, Parquet; the request body): 413 above this.
    max_history_import_bytes: int = 2 * 1024**3
    max_survey_bytes: int = 11 * 1024 * 1024
    # A request body must arrive within this long after its headers (408), so a trickled body cannot hold a worker.
    body_timeout_s: float = 60.0
    # Request headers must arrive within this long after a connection opens or a request starts (then closed).
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    # Failed authentications per client address: this many within `auth_fail_window_s` → 429 until the window
    # passes; at most `auth_fail_clients` addresses are remembered (the least recent are forgotten).
    auth_fail_limit: int = 20
    auth_fail_window_s: float = 60.0
    auth_fail_clients: int = 10_000
    # A dashboard sign-in lasts this long (a working day); logout or revoking the key ends it sooner.
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    # Expired and ended sessions are deleted this often by a task of the API process (0: only at sign-in).
    session_purge_s: float = Field(default=600.0, ge=0)
    # A sign-in form may be posted only from the dashboard's own origin (Origin, else Referer, when the browser
    # sends one) or one of these, e.g. a reverse proxy's public "https://cxp.example.org".
    trusted_origins: list[str] = []
    # Fair use of the database pool (api/fairness.py). Heavy computations (analytics, pricing views) run at most
    # this many at once per API key; one more is refused at once with 429 + Retry-After (0: no limit).
    heavy_per_key: int = 2
    heavy_retry_after_s: int = 2
    # Uncached heavy computations (analytics views, pricing comparisons, backtests) run at most this many at once
    # across all keys (0: no limit); more wait up to `compute_wait_s` for a slot, holding no pooled connection,
    # then get 503 `compute_busy` + Retry-After. One per core: on a 10,000-device fleet more at once only
    # share the cores, multiply memory (~0.2–0.5 GB each) and hold every pooled connection.
    compute_slots: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=0)
    compute_wait_s: float = Field(default=30.0, ge=0)
    # glibc malloc arenas of the API process (core/memory.py; 0: glibc's default of up to 8 per core).
    malloc_arenas: int = Field(default=2, ge=0)
    # Cheap requests (key checks, registry, ingest status) use a pool of their own of this size, so they never
    # queue behind analytics (0: they share the main pool).
    light_pool_size: int = 2
    # A request waits at most this long for a pooled connection, then gets 503 `busy` with Retry-After.
    pool_timeout_s: float = 2.0


class HaSettings(BaseModel):
    """The local highly available TimescaleDB of `cxp stack up --ha`: etcd + three Patroni-managed members."""

    # PostgreSQL ports of the members (loopback), their Patroni REST ports, and etcd's client and peer ports.
    pg_ports: list[int] = Field(default=[15433, 15434, 15435], min_length=2)
    rest_ports: list[int] = Field(default=[18008, 18009, 18010], min_length=2)
    etcd_client_port: int = 12369
    etcd_peer_port: int = 12370
    # Patroni's leader key TTL and loop: a dead primary is replaced within about ttl_s (+ loop_s).
    ttl_s: int = Field(default=10, ge=6)
    loop_s: int = Field(default=2, ge=1)
    # Synchronous replication (Patroni synchronous_mode): a commit returns once a standby has it, so a failover never
    # loses what the gateway acked. Off: asynchronous, the last commits before a crash may be lost.
    synchronous: bool = True

    @property
    def members(self) -> str:
        """The members as `DbSettings.members` takes them."""
        return ",".join(f"127.0.0.1:{p}" for p in self.pg_ports)


class StackSettings(BaseModel):
    """Where the local stack keeps its data and logs."""

    dir: Path = PROJECT_ROOT / ".stack"
    ha: HaSettings = Field(default_factory=HaSettings)


class PkiSettings(BaseModel):
    """The platform CA's directory and the validity of what it issues."""

    # Unset: <stack dir>/pki.
    dir: Path | None = None
    ca_days: int = Field(default=3650, ge=1)
    server_days: int = Field(default=825, ge=1)
    device_days: int = Field(default=365, ge=1)
    # Brokers refuse every certificate once the CRL's next-update has passed: re-issue it well before.
    crl_days: int = Field(default=7, ge=1)


class CredentialSettings(BaseModel):
    """Device credentials: rotation grace and the sweep that ends it and keeps the CRL fresh."""

    # After a rotation the old token or certificate stays valid this long (devices switch without downtime).
    rotation_grace_s: float = Field(default=24 * 3600.0, ge=0)
    # How often the API's sweep ends grace windows and re-issues the CRL (0: no sweep in this process).
    sweep_interval_s: float = Field(default=60.0, ge=0)


class AlertSettings(BaseModel):
    """Alert evaluation and delivery."""

    # Webhook signing secrets, one `<secret_ref>.secret` file each (0600); unset: <stack dir>/secrets/alerts.
    secrets_dir: Path | None = None
    # Evaluate at least this often even when no rollup changed (silence needs the clock, not new data).
    eval_interval_s: float = Field(default=30.0, ge=0)
    # One webhook POST's timeout and the attempts of one delivery pass (more passes follow, in order).
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=3, ge=1)
    # E-mail channels go through this SMTP server (unset host: e-mail notifications stay queued).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "cxp-alerts@localhost"
    smtp_starttls: bool = False


class Settings(BaseSettings):
    """All configuration of a process; nested fields via CXP_<SECTION>__<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="CXP_", env_nested_delimiter="__", extra="ignore")

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    pki: PkiSettings = Field(default_factory=PkiSettings)
    credentials: CredentialSettings = Field(default_factory=CredentialSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention_days: int | None = None
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _dirs_under_stack(self) -> Settings:
        if self.pki.dir is None:
            self.pki.dir = self.stack.dir / "pki"
        if self.mqtt.secrets_dir is None:
            self.mqtt.secrets_dir = self.stack.dir / "secrets"
        if self.alerts.secrets_dir is None:
            self.alerts.secrets_dir = self.stack.dir / "secrets" / "alerts"
        return self


def settings_env(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """An environment (from `base` without CXP_ variables) that makes a child process's settings equal these."""
    env = {k: v for k, v in base.items() if not k.startswith("CXP_")}

    def put(name: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                put(f"{name}__{key.upper()}", inner)
        elif isinstance(value, list):
            env[name] = json.dumps(value)
        elif value is not None:
            env[name] = str(value)

    for name, value in settings.model_dump(mode="json").items():
        put(f"CXP_{name.upper()}", value)
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

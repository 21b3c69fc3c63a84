"""The device registry: products and their touchpoints, accounts, devices; and the simulator's planted truth."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from cxp.store.errors import mapped_errors
from cxp.store.rollups import recount_core_uses


@dataclass(frozen=True, slots=True)
class TouchpointRow:
    """One touchpoint of a product's catalogue."""

    touchpoint: str
    journey_stage: str
    owner: str
    is_core: bool = False
    target_latency_ms: float | None = None
    target_duration_s: float | None = None
    unit: str | None = None
    capability: str | None = None  # monitoring / control / optimisation / autonomy (migration 020)


@dataclass(frozen=True, slots=True)
class ProductRow:
    """A product model with its touchpoint catalogue."""

    product_id: str
    name: str
    heartbeat_interval_s: int
    expected_active_days_per_week: float | None
    touchpoints: Sequence[TouchpointRow] = ()


@dataclass(frozen=True, slots=True)
class AccountRow:
    """A customer."""

    account_id: str
    name: str
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A registered device."""

    device_id: str
    product_id: str
    account_id: str | None
    activated_at: datetime
    plan: str | None = None
    experiment_arm: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What the gateway needs to know about a device to accept its telemetry."""

    device_key: int
    activated_at: datetime


# The heartbeat covers (uptime_daily) hold for the product's heartbeat interval: a new interval, or a device moved
# to another product, marks the affected device-days that still have raw states dirty, so the refresh recomputes
# them (days whose raw data retention dropped keep what was computed).
_STILL_RAW = ("EXISTS (SELECT 1 FROM device_state st WHERE st.device_key = u.device_key"
              " AND st.ts >= u.day::timestamp AT TIME ZONE 'UTC'"
              " AND st.ts < (u.day + 1)::timestamp AT TIME ZONE 'UTC')")
_MARK_COVERS_OF_PRODUCT = (
    "INSERT INTO rollup_dirty (device_key, day) SELECT u.device_key, u.day FROM uptime_daily u"
    " JOIN devices d ON d.device_key = u.device_key JOIN products p ON p.product_id = d.product_id"
    " WHERE p.product_id = %(product)s AND p.heartbeat_interval_s <> %(interval)s AND " + _STILL_RAW
)
_MARK_COVERS_OF_MOVED_DEVICES = (
    "INSERT INTO rollup_dirty (device_key, day) SELECT u.device_key, u.day FROM uptime_daily u"
    " JOIN devices d ON d.device_key = u.device_key JOIN _devices_in i ON i.device_id = d.device_id"
    " WHERE i.product_id IS DISTINCT FROM d.product_id AND " + _STILL_RAW
)
# A moved device's hours count for its new product from now on: the product-hourly exposure of every day it has
# hourly rows for is recomputed by the next refresh.
_QUEUE_PRODUCT_DAYS_OF_MOVED_DEVICES = (
    "INSERT INTO rollup_product_dirty (day) SELECT DISTINCT (h.bucket AT TIME ZONE 'UTC')::date FROM rollup_hourly h"
    " JOIN devices d ON d.device_key = h.device_key JOIN _devices_in i ON i.device_id = d.device_id"
    " WHERE i.product_id IS DISTINCT FROM d.product_id"
)

_MOVED_DEVICE_KEYS = ("SELECT d.device_key FROM devices d JOIN _devices_in i ON i.device_id = d.device_id"
                      " WHERE i.product_id IS DISTINCT FROM d.product_id")
_CORE_TOUCHPOINTS = ("SELECT coalesce(array_agg(touchpoint ORDER BY touchpoint), '{}') FROM touchpoints"
                     " WHERE product_id = %s AND is_core")


def upsert_products(conn: psycopg.Connection, *, products: Iterable[ProductRow]) -> int:
    """Create or update products and replace their touchpoint catalogues."""
    n = 0
    with mapped_errors(), conn.transaction(), conn.cursor() as cur:
        for p in products:
            cur.execute(_MARK_COVERS_OF_PRODUCT, {"product": p.product_id, "interval": p.heartbeat_interval_s})
            cur.execute(
                "INSERT INTO products (product_id, name, heartbeat_interval_s, expected_active_days_per_week)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name,"
                " heartbeat_interval_s = EXCLUDED.heartbeat_interval_s,"
                " expected_active_days_per_week = EXCLUDED.expected_active_days_per_week",
                (p.product_id, p.name, p.heartbeat_interval_s, p.expected_active_days_per_week),
            )
            core_before = cur.execute(_CORE_TOUCHPOINTS, (p.product_id,)).fetchone()[0]
            cur.execute("DELETE FROM touchpoints WHERE product_id = %s", (p.product_id,))
            cur.executemany(
                "INSERT INTO touchpoints (product_id, touchpoint, journey_stage, owner, is_core,"
                " target_latency_ms, target_duration_s, unit, capability)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(p.product_id, t.touchpoint, t.journey_stage, t.owner, t.is_core, t.target_latency_ms,
                  t.target_duration_s, t.unit, t.capability) for t in p.touchpoints],
            )
            if cur.execute(_CORE_TOUCHPOINTS, (p.product_id,)).fetchone()[0] != core_before:
                recount_core_uses(conn, devices="SELECT device_key FROM devices WHERE product_id = %(product)s",
                                  params={"product": p.product_id})
            n += 1
    return n


def upsert_accounts(conn: psycopg.Connection, *, accounts: Iterable[AccountRow]) -> int:
    """Create or update accounts."""
    rows = [(a.account_id, a.name, a.segment) for a in accounts]
    with mapped_errors(), conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO accounts (account_id, name, segment) VALUES (%s, %s, %s) ON CONFLICT (account_id)"
            " DO UPDATE SET name = EXCLUDED.name, segment = EXCLUDED.segment", rows,
        )
    return len(rows)


def upsert_devices(conn: psycopg.Connection, *, devices: Iterable[DeviceRow]) -> int:
    """Create or update devices (COPY into a staging table, then one upsert)."""
    n = 0
    with mapped_errors(), conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE _devices_in (device_id text, product_id text, account_id text,"
                    " activated_at timestamptz, plan text, experiment_arm text) ON COMMIT DROP")
        with cur.copy("COPY _devices_in FROM STDIN") as copy:
            for d in devices:  # row by row: a large import is not copied into a second list first
                copy.write_row((d.device_id, d.product_id, d.account_id, d.activated_at, d.plan, d.experiment_arm))
                n += 1
        cur.execute(_MARK_COVERS_OF_MOVED_DEVICES)
        cur.execute(_QUEUE_PRODUCT_DAYS_OF_MOVED_DEVICES)
        moved = [k for (k,) in cur.execute(_MOVED_DEVICE_KEYS).fetchall()]
        cur.execute(
            "INSERT INTO devices (device_id, product_id, account_id, activated_at, plan, experiment_arm)"
            " SELECT * FROM _devices_in ON CONFLICT (device_id) DO UPDATE SET product_id = EXCLUDED.product_id,"
            " account_id = EXCLUDED.account_id, activated_at = EXCLUDED.activated_at, plan = EXCLUDED.plan,"
            " experiment_arm = EXCLUDED.experiment_arm"
        )
        if moved:  # their days' core uses now count their new product's core touchpoints
            recount_core_uses(conn, devices="SELECT unnest(%(keys)s::int[])", params={"keys": moved})
    return n


def get_device_identity(conn: psycopg.Connection, *, device_id: str) -> DeviceIdentity | None:
    """The key and activation time of one device, or None when it is not registered."""
    with mapped_errors():
        row = conn.execute("SELECT device_key, activated_at FROM devices WHERE device_id = %s",
                           (device_id,)).fetchone()
    return DeviceIdentity(row[0], row[1]) if row else None


def list_device_identities(conn: psycopg.Connection) -> dict[str, DeviceIdentity]:
    """Every registered device's identity, by device id (the gateway's cache)."""
    with mapped_errors():
        rows = conn.execute("SELECT device_id, device_key, activated_at FROM devices").fetchall()
    return {device_id: DeviceIdentity(key, activated) for device_id, key, activated in rows}


_UNKNOWN_TTL_S = 30.0  # how long an unknown device id is remembered before the registry is asked again


class DeviceCache:
    """Registered devices by id, as (device_key, activation epoch); misses go to the database, unknown ids are
    remembered briefly. Its `lookup` is what contract validation asks."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, float]] = {}
        self._unknown: dict[str, float] = {}
        self.conn: psycopg.Connection | None = None

    def load(self, conn: psycopg.Connection) -> None:
        """Replace the cache with the registry's contents."""
        self.conn = conn
        self._known = {k: (v.device_key, v.activated_at.timestamp()) for k, v in list_device_identities(conn).items()}
        self._unknown.clear()

    @property
    def size(self) -> int:
        """How many registered devices are cached."""
        return len(self._known)

    def lookup(self, device_id: str) -> tuple[int, float] | None:
        """The device's key and activation epoch, or None when it is not registered."""
        found = self._known.get(device_id)
        if found is not None:
            return found
        now = time.monotonic()
        if self._unknown.get(device_id, 0.0) > now:
            return None
        identity = get_device_identity(self.conn, device_id=device_id)
        if identity is None:
            self._unknown[device_id] = now + _UNKNOWN_TTL_S
            return None
        self._known[device_id] = found = (identity.device_key, identity.activated_at.timestamp())
        return found


# ---------------------------------------------------------------------------------------------- reads and deletes

_PRODUCT_COLS = "product_id, name, heartbeat_interval_s, expected_active_days_per_week"
_TP_COLS = "touchpoint, journey_stage, owner, is_core, target_latency_ms, target_duration_s, unit"
_DEVICE_COLS = "device_id, product_id, account_id, activated_at, plan, experiment_arm"


def _touchpoints(conn: psycopg.Connection, product_ids: Sequence[str]) -> dict[str, list[TouchpointRow]]:
    rows = conn.execute(f"SELECT product_id, {_TP_COLS} FROM touchpoints WHERE product_id = ANY(%s)"
                        " ORDER BY product_id, touchpoint", (list(product_ids),)).fetchall()
    out: dict[str, list[TouchpointRow]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(TouchpointRow(*r[1:]))
    return out


def _after(column: str, after: str | None) -> str:
    """The keyset condition on `column` (a constant shape each way, so the planner sees a plain range)."""
    return "" if after is None else f" AND {column} > %(after)s"


def list_products(conn: psycopg.Connection, *, limit: int = 100, offset: int = 0,
                  after: str | None = None) -> tuple[list[ProductRow], int]:
    """Products with their touchpoints, by id (after the id `after`, if given), and how many there are."""
    params = {"limit": limit, "offset": offset, "after": after}
    with mapped_errors():
        rows = conn.execute(f"SELECT {_PRODUCT_COLS} FROM products WHERE true{_after('product_id', after)}"
                            " ORDER BY product_id LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute("SELECT count(*) FROM products").fetchone()[0]
        tps = _touchpoints(conn, [r[0] for r in rows])
    return [ProductRow(*r, touchpoints=tuple(tps.get(r[0], ()))) for r in rows], total


def get_product(conn: psycopg.Connection, *, product_id: str) -> ProductRow | None:
    """One product with its touchpoints."""
    with mapped_errors():
        row = conn.execute(f"SELECT {_PRODUCT_COLS} FROM products WHERE product_id = %s", (product_id,)).fetchone()
        if row is None:
            return None
        return ProductRow(*row, touchpoints=tuple(_touchpoints(conn, [product_id]).get(product_id, ())))


def list_accounts(
    conn: psycopg.Connection, *, segment: str | None = None, limit: int = 100, offset: int = 0,
    after: str | None = None,
) -> tuple[list[AccountRow], int]:
    """Accounts by id (optionally of one segment; after the id `after`, if given) and how many match."""
    where = "WHERE true" + ("" if segment is None else " AND segment = %(segment)s")
    params = {"segment": segment, "limit": limit, "offset": offset, "after": after}
    with mapped_errors():
        rows = conn.execute(f"SELECT account_id, name, segment FROM accounts {where}{_after('account_id', after)}"
                            " ORDER BY account_id LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute(f"SELECT count(*) FROM accounts {where}", params).fetchone()[0]
    return [AccountRow(*r) for r in rows], total


def get_account(conn: psycopg.Connection, *, account_id: str) -> AccountRow | None:
    """One account."""
    with mapped_errors():
        row = conn.execute("SELECT account_id, name, segment FROM accounts WHERE account_id = %s",
                           (account_id,)).fetchone()
    return AccountRow(*row) if row else None


def list_devices(
    conn: psycopg.Connection, *, product_id: str | None = None, account_id: str | None = None,
    limit: int = 100, offset: int = 0, after: str | None = None,
) -> tuple[list[DeviceRow], int]:
    """Devices by id (optionally of one product and/or account; after the id `after`, if given) and how many
    match."""
    # only the filters given: a plan prepared for "x IS NULL OR …" could not use the indexes either way
    where = ("WHERE true" + ("" if product_id is None else " AND product_id = %(product)s")
             + ("" if account_id is None else " AND account_id = %(account)s"))
    params = {"product": product_id, "account": account_id, "limit": limit, "offset": offset, "after": after}
    with mapped_errors():
        rows = conn.execute(f"SELECT {_DEVICE_COLS} FROM devices {where}{_after('device_id', after)}"
                            " ORDER BY device_id LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute(f"SELECT count(*) FROM devices {where}", params).fetchone()[0]
    return [DeviceRow(*r) for r in rows], total


def get_device(conn: psycopg.Connection, *, device_id: str) -> DeviceRow | None:
    """One device."""
    with mapped_errors():
        row = conn.execute(f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    return DeviceRow(*row) if row else None


def count_references(conn: psycopg.Connection, *, product_id: str | None = None, account_id: str | None = None,
                     device_id: str | None = None) -> int:
    """What still refers to a registry entry: devices of a product/account, or stored telemetry of a device."""
    with mapped_errors():
        if product_id is not None:
            return conn.execute("SELECT count(*) FROM devices WHERE product_id = %s", (product_id,)).fetchone()[0]
        if account_id is not None:
            return conn.execute("SELECT count(*) FROM devices WHERE account_id = %s", (account_id,)).fetchone()[0]
        return conn.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM events e JOIN devices d USING (device_key)"
            "  WHERE d.device_id = %(d)s LIMIT 1) x) + (SELECT count(*) FROM (SELECT 1 FROM device_state s"
            "  JOIN devices d USING (device_key) WHERE d.device_id = %(d)s LIMIT 1) y)", {"d": device_id},
        ).fetchone()[0]


def reattributed_history(conn: psycopg.Connection, *, devices: Sequence[DeviceRow]) -> dict[str, str]:
    """Devices whose new product or account differs from the stored one while they have telemetry: id → why."""
    if not devices:
        return {}
    wanted = {d.device_id: d for d in devices}
    with mapped_errors():
        rows = conn.execute(
            "SELECT d.device_id, d.product_id, d.account_id FROM devices d WHERE d.device_id = ANY(%s)"
            " AND (EXISTS (SELECT 1 FROM events e WHERE e.device_key = d.device_key)"
            "  OR EXISTS (SELECT 1 FROM device_state s WHERE s.device_key = d.device_key))",
            (list(wanted),),
        ).fetchall()
    moved = {}
    for device_id, product_id, account_id in rows:
        new = wanted[device_id]
        changes = [f"{what} {old!r} → {now!r}" for what, old, now in (
            ("product", product_id, new.product_id), ("account", account_id, new.account_id)) if old != now]
        if changes:
            moved[device_id] = (f"device {device_id!r} has stored telemetry; moving it ({', '.join(changes)}) would"
                                " re-attribute its history")
    return moved


def delete_registry_entry(conn: psycopg.Connection, *, table: str, key: str) -> bool:
    """Delete one product, account or device by id; False when it did not exist."""
    column = {"products": "product_id", "accounts": "account_id", "devices": "device_id"}[table]
    with mapped_errors():
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table),
                                                                         sql.Identifier(column)), (key,))
    return cur.rowcount > 0


# ---------------------------------------------------------------------------------------------- simulator truth
# The truth a simulated fleet plants lives in the tables of migration 006_sim_truth, apart from the registry.


@dataclass(frozen=True, slots=True)
class GroundTruthRow:
    """What the simulator planted for one device."""

    device_id: str
    persona: str
    churns: bool
    churn_at: datetime | None
    error_proneness: float
    extra: dict = field(default_factory=dict)
    churn_cause: str | None = None
    decided_at: datetime | None = None
    churn_drivers: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """A disruption the simulator planted."""

    incident_id: str
    product_id: str
    touchpoint: str
    code: str
    severity: str
    start_at: datetime
    end_at: datetime
    recovery_quality: str | None = None
    paradox: bool = False


def upsert_ground_truth(
    conn: psycopg.Connection, *, truths: Iterable[GroundTruthRow], incidents: Iterable[IncidentRow] = ()
) -> int:
    """Record the simulator's ground truth (replacing earlier truth for the same devices)."""
    rows = [
        (t.device_id, t.persona, t.churns, t.churn_at, t.error_proneness, Jsonb(t.extra), t.churn_cause, t.decided_at,
         Jsonb(t.churn_drivers))
        for t in truths
    ]
    with mapped_errors(), conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sim_ground_truth (device_id, persona, churns, churn_at, error_proneness, extra, churn_cause,"
            " decided_at, churn_drivers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (device_id) DO UPDATE SET persona = EXCLUDED.persona,"
            " churns = EXCLUDED.churns, churn_at = EXCLUDED.churn_at,"
            " error_proneness = EXCLUDED.error_proneness, extra = EXCLUDED.extra, churn_cause = EXCLUDED.churn_cause,"
            " decided_at = EXCLUDED.decided_at, churn_drivers = EXCLUDED.churn_drivers", rows,
        )
        cur.executemany(
            "INSERT INTO sim_incidents (incident_id, product_id, touchpoint, code, severity, start_at, end_at,"
            " recovery_quality, paradox) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (incident_id)"
            " DO UPDATE SET product_id = EXCLUDED.product_id, touchpoint = EXCLUDED.touchpoint, code = EXCLUDED.code,"
            " severity = EXCLUDED.severity, start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at,"
            " recovery_quality = EXCLUDED.recovery_quality, paradox = EXCLUDED.paradox",
            [(i.incident_id, i.product_id, i.touchpoint, i.code, i.severity, i.start_at, i.end_at,
              i.recovery_quality, i.paradox) for i in incidents],
        )
    return len(rows)


@dataclass(frozen=True, slots=True)
class TouchpointTruthRow:
    """A touchpoint's planted Kano class and effect sizes."""

    product_id: str
    touchpoint: str
    kano_class: str
    fail_penalty: float
    success_reward: float
    churn_hazard: float


def upsert_touchpoint_truth(conn: psycopg.Connection, *, rows: Iterable[TouchpointTruthRow]) -> int:
    """Record the simulator's planted touchpoint classes and effects (replacing earlier ones)."""
    values = [(r.product_id, r.touchpoint, r.kano_class, r.fail_penalty, r.success_reward, r.churn_hazard)
              for r in rows]
    with mapped_errors(), conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sim_touchpoint_truth (product_id, touchpoint, kano_class, fail_penalty, success_reward,"
            " churn_hazard) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (product_id, touchpoint) DO UPDATE SET"
            " kano_class = EXCLUDED.kano_class, fail_penalty = EXCLUDED.fail_penalty,"
            " success_reward = EXCLUDED.success_reward, churn_hazard = EXCLUDED.churn_hazard", values,
        )
    return len(values)

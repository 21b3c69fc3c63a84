"""Registry endpoints (role `admin`): products with touchpoints, accounts, devices — CRUD and CSV import."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from cxp.api.cursors import decode_cursor, page_of
from cxp.api.deps import AdminKey, ConnDep, KeysetPageDep, KeysetPageParams, LightConnDep
from cxp.api.errors import Conflict, ErrorBody, ErrorDetail, NotFound, Unprocessable
from cxp.api.routers.credentials.schemas import CredentialState
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, Page, csv_response
from cxp.api.uploads import MIB, CsvColumns, CsvProblems, CsvRow, iter_csv, line_loc
from cxp.store.broker_clients import BrokerClient, list_broker_clients
from cxp.store.credentials import credential_summaries
from cxp.store.registry import (
    AccountRow,
    DeviceRow,
    ProductRow,
    TouchpointRow,
    count_references,
    delete_registry_entry,
    get_account,
    get_device,
    get_product,
    list_accounts,
    list_devices,
    list_products,
    reattributed_history,
    upsert_accounts,
    upsert_devices,
    upsert_products,
)

router = APIRouter(prefix="/v1/registry", tags=["registry"])

Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
IdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
# A device id is also its broker username and its topic level: the telemetry contract's alphabet (no ':', the
# password file's separator), at most 64 characters. Reading or deleting takes any stored id.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
DeviceIdent = Annotated[str, Field(min_length=1, max_length=64, pattern=DEVICE_ID_PATTERN)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=DEVICE_ID_PATTERN)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
MAX_CSV_BYTES = 20 * MIB
ForceQuery = Annotated[bool, Query(description=(
    "Move devices that have stored telemetry to another product or account anyway: their whole history moves"
    " with them (re-attributed in every report). Without it such a change is refused with 409."))]


# Stored as `real`, to 1/1000 of a day: 1e-50 is stored as 0 instead of underflowing in the database.
DaysPerWeek = Annotated[float, Field(ge=0, le=7), AfterValidator(lambda v: round(v, 3))]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Touchpoint(_In):
    """One touchpoint of a product's catalogue: where it sits in the journey and who owns it."""

    touchpoint: Ident
    journey_stage: Literal["pre_purchase", "purchase", "post_purchase"]
    owner: Literal["brand", "partner", "customer", "external"]
    is_core: bool = False
    # Stored as `real`: a lower bound of 1 µs keeps positive values out of its underflow range.
    target_latency_ms: Annotated[float, Field(ge=0.001, le=86_400_000)] | None = None
    target_duration_s: Annotated[float, Field(ge=0.000_001, le=86_400 * 30)] | None = None
    unit: Annotated[str, Field(max_length=40)] | None = None


class ProductIn(_In):
    """A product model and its touchpoint catalogue (replaced as a whole)."""

    name: Text
    heartbeat_interval_s: Annotated[int, Field(gt=0, le=7 * 86_400)] = 3600
    expected_active_days_per_week: DaysPerWeek | None = None
    touchpoints: Annotated[list[Touchpoint], Field(max_length=500)] = []

    @field_validator("touchpoints")
    @classmethod
    def _unique(cls, v: list[Touchpoint]) -> list[Touchpoint]:
        names = [t.touchpoint for t in v]
        if len(names) != len(set(names)):
            raise ValueError("touchpoint names must be unique within a product")
        return v


class Product(ProductIn):
    """A product as stored."""

    product_id: str


class AccountIn(_In):
    """A customer account."""

    name: Text
    segment: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class Account(AccountIn):
    """An account as stored."""

    account_id: str


class DeviceIn(_In):
    """A device: its product, owner, activation, plan and experiment arm."""

    product_id: Ident
    account_id: Ident | None = None
    activated_at: AwareDatetime
    plan: Annotated[str, Field(max_length=100)] | None = None
    experiment_arm: Annotated[str, Field(max_length=100)] | None = None

    @field_validator("activated_at")
    @classmethod
    def _plausible(cls, v: datetime) -> datetime:
        if not datetime(2000, 1, 1, tzinfo=UTC) <= v <= datetime(2100, 1, 1, tzinfo=UTC):
            raise ValueError("activated_at must lie between 2000 and 2100")
        return v.astimezone(UTC)


class Device(DeviceIn):
    """A device as stored."""

    device_id: str


class DeviceConnection(BaseModel):
    """What the broker saw of a device (all its usernames), from the gateway's broker-log follower."""

    connected: bool = Field(description="a session of the device is connected now")
    last_connected_at: datetime | None = None
    last_address: str | None = Field(None, description="client address of the latest connect")
    denied_publishes: int = Field(0, description="publishes the broker refused (another device's topic, …)")
    last_denied_topic: str | None = None


class DeviceView(Device):
    """A device as stored, with its credential state (kinds live, active, in a rotation's grace, revoked) and last
    connection (null until the broker has seen it)."""

    credentials: CredentialState | None = None
    connection: DeviceConnection | None = None


class ImportResult(BaseModel):
    """What a CSV import stored."""

    kind: str
    rows: int
    stored: int


def _product(p: ProductRow) -> Product:
    return Product(product_id=p.product_id, name=p.name, heartbeat_interval_s=p.heartbeat_interval_s,
                   expected_active_days_per_week=p.expected_active_days_per_week,
                   touchpoints=[Touchpoint.model_construct(**{s: getattr(t, s) for s in TouchpointRow.__slots__})
                                for t in p.touchpoints])


def _product_row(product_id: str, p: ProductIn) -> ProductRow:
    return ProductRow(product_id, p.name, p.heartbeat_interval_s, p.expected_active_days_per_week,
                      [TouchpointRow(**t.model_dump()) for t in p.touchpoints])


def _device(d: DeviceRow) -> Device:
    return Device.model_construct(device_id=d.device_id, product_id=d.product_id, account_id=d.account_id,
                                  activated_at=d.activated_at, plan=d.plan, experiment_arm=d.experiment_arm)


def _connections(conn: psycopg.Connection, device_ids: list[str]) -> dict[str, DeviceConnection]:
    """Per device, its usernames' broker records folded into one: connected if any is, the latest connect."""
    seen: dict[str, list[BrokerClient]] = {}
    for row in list_broker_clients(conn, device_ids=device_ids):
        seen.setdefault(row.device_id, []).append(row)
    out = {}
    for device_id, rows in seen.items():
        latest = max(rows, key=lambda r: r.last_connected_at or datetime.min.replace(tzinfo=UTC))
        denied = max(rows, key=lambda r: r.last_denied_at or datetime.min.replace(tzinfo=UTC))
        out[device_id] = DeviceConnection(connected=any(r.connected for r in rows),
                                          last_connected_at=latest.last_connected_at, last_address=latest.last_address,
                                          denied_publishes=sum(r.denied_publishes for r in rows),
                                          last_denied_topic=denied.last_denied_topic)
    return out


def _device_views(conn: psycopg.Connection, rows: Sequence[DeviceRow]) -> list[DeviceView]:
    ids = [d.device_id for d in rows]
    states, connections = credential_summaries(conn, device_ids=ids), _connections(conn, ids)
    return [DeviceView.model_construct(**dict(_device(d)), credentials=CredentialState.of(d.device_id,
                                                                                          states[d.device_id]),
                                       connection=connections.get(d.device_id))
            for d in rows]


def _unknown_refs(conn: psycopg.Connection, devices: Sequence[DeviceRow]) -> list[tuple[int, str, str]]:
    """Products or accounts named by devices that are not registered: (index in `devices`, column, message)."""
    products = {r[0] for r in conn.execute("SELECT product_id FROM products WHERE product_id = ANY(%s)",
                                           ([d.product_id for d in devices],)).fetchall()}
    accounts = {r[0] for r in conn.execute("SELECT account_id FROM accounts WHERE account_id = ANY(%s)",
                                           ([d.account_id for d in devices if d.account_id],)).fetchall()}
    unknown = []
    for i, device in enumerate(devices):
        if device.product_id not in products:
            unknown.append((i, "product_id", f"unknown product {device.product_id!r}"))
        if device.account_id and device.account_id not in accounts:
            unknown.append((i, "account_id", f"unknown account {device.account_id!r}"))
    return unknown


# ---------------------------------------------------------------------------------------------- products

def _after_id(page: KeysetPageParams, kind: str) -> str | None:
    """The id a registry list's cursor names (None: no cursor)."""
    return None if page.cursor is None else str(decode_cursor(page.cursor, kind, (str,))[0])


@router.get("/products", response_model=Page[Product], summary="Products with their touchpoint catalogues")
def list_products_view(_: AdminKey, conn: LightConnDep, page: KeysetPageDep) -> Page[Product]:
    """Products by id; `next_cursor` pages on by keyset."""
    rows, total = list_products(conn, limit=page.limit + 1, offset=page.offset, after=_after_id(page, "products"))
    items, cursor = page_of(rows, limit=page.limit, kind="products", key=lambda p: (p.product_id,))
    return Page[Product](items=[_product(p) for p in items], total=total, limit=page.limit, offset=page.offset,
                         next_cursor=cursor)


@router.get("/products/{product_id}", response_model=Product, responses={404: {"description": "Unknown product"}})
def get_product_view(_: AdminKey, conn: LightConnDep, product_id: IdPath) -> Product:
    """One product."""
    p = get_product(conn, product_id=product_id)
    if p is None:
        raise NotFound(f"no product {product_id!r}")
    return _product(p)


@router.put("/products/{product_id}", response_model=Product, summary="Create or replace a product")
def put_product(_: AdminKey, conn: LightConnDep, product_id: IdPath, body: ProductIn) -> Product:
    """Create the product or replace it and its touchpoint catalogue."""
    upsert_products(conn, products=[_product_row(product_id, body)])
    return _product(get_product(conn, product_id=product_id))


@router.delete("/products/{product_id}", status_code=204, response_class=Response,
               responses={404: {"description": "Unknown product"}, 409: {"description": "Devices use it"}})
def delete_product(_: AdminKey, conn: LightConnDep, product_id: IdPath) -> Response:
    """Delete a product no device uses."""
    if (n := count_references(conn, product_id=product_id)) > 0:
        raise Conflict(f"product {product_id!r} has {n} devices; delete or move them first")
    if not delete_registry_entry(conn, table="products", key=product_id):
        raise NotFound(f"no product {product_id!r}")
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- accounts

@router.get("/accounts", response_model=Page[Account], responses=CSV_RESPONSES, summary="Customer accounts")
def list_accounts_view(
    _: AdminKey, conn: LightConnDep, page: KeysetPageDep,
    segment: Annotated[str | None, Query(max_length=100)] = None, format: FormatQuery = "json",
) -> Page[Account] | Response:
    """Accounts by id, optionally of one segment; `next_cursor` pages on by keyset."""
    rows, total = list_accounts(conn, segment=segment, limit=page.limit + 1, offset=page.offset,
                                after=_after_id(page, "accounts"))
    items, cursor = page_of(rows, limit=page.limit, kind="accounts", key=lambda a: (a.account_id,))
    if format == "csv":
        return csv_response(items, filename="accounts", columns=("account_id", "name", "segment"))
    return Page[Account](items=[Account(account_id=a.account_id, name=a.name, segment=a.segment) for a in items],
                         total=total, limit=page.limit, offset=page.offset, next_cursor=cursor)


@router.get("/accounts/{account_id}", response_model=Account, responses={404: {"description": "Unknown account"}})
def get_account_view(_: AdminKey, conn: LightConnDep, account_id: IdPath) -> Account:
    """One account."""
    a = get_account(conn, account_id=account_id)
    if a is None:
        raise NotFound(f"no account {account_id!r}")
    return Account(account_id=a.account_id, name=a.name, segment=a.segment)


@router.put("/accounts/{account_id}", response_model=Account, summary="Create or replace an account")
def put_account(_: AdminKey, conn: LightConnDep, account_id: IdPath, body: AccountIn) -> Account:
    """Create or update an account."""
    upsert_accounts(conn, accounts=[AccountRow(account_id, body.name, body.segment)])
    return Account(account_id=account_id, **body.model_dump())


@router.delete("/accounts/{account_id}", status_code=204, response_class=Response,
               responses={404: {"description": "Unknown account"}, 409: {"description": "Devices belong to it"}})
def delete_account(_: AdminKey, conn: LightConnDep, account_id: IdPath) -> Response:
    """Delete an account that owns no device."""
    if (n := count_references(conn, account_id=account_id)) > 0:
        raise Conflict(f"account {account_id!r} owns {n} devices; delete or move them first")
    if not delete_registry_entry(conn, table="accounts", key=account_id):
        raise NotFound(f"no account {account_id!r}")
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- devices

@router.get("/devices", response_model=Page[DeviceView], responses=CSV_RESPONSES,
            summary="Registered devices with their credential state")
def list_devices_view(
    _: AdminKey, conn: LightConnDep, page: KeysetPageDep,
    product: Annotated[str | None, Query(max_length=128)] = None,
    account: Annotated[str | None, Query(max_length=128)] = None,
    format: FormatQuery = "json",
) -> Page[DeviceView] | Response:
    """Devices by id, optionally of one product and/or account, with credential state; `next_cursor` pages on."""
    rows, total = list_devices(conn, product_id=product, account_id=account, limit=page.limit + 1,
                               offset=page.offset, after=_after_id(page, "devices"))
    items, cursor = page_of(rows, limit=page.limit, kind="devices", key=lambda d: (d.device_id,))
    if format == "csv":
        return csv_response(items, filename="devices", columns=(
            "device_id", "product_id", "account_id", "activated_at", "plan", "experiment_arm"))
    return Page[DeviceView](items=_device_views(conn, items), total=total, limit=page.limit, offset=page.offset,
                            next_cursor=cursor)


@router.get("/devices/{device_id}", response_model=DeviceView, responses={404: {"description": "Unknown device"}})
def get_device_view(_: AdminKey, conn: LightConnDep, device_id: IdPath) -> DeviceView:
    """One device with its credential state."""
    d = get_device(conn, device_id=device_id)
    if d is None:
        raise NotFound(f"no device {device_id!r}")
    return _device_views(conn, [d])[0]


@router.put("/devices/{device_id}", response_model=Device, summary="Register or update a device",
            responses={409: {"description": "It has telemetry and would move to another product or account"
                                            " (see `force`), or a concurrent change removed its product or account"}})
def put_device(_: AdminKey, conn: LightConnDep, device_id: DeviceIdPath, body: DeviceIn,
               force: ForceQuery = False) -> Device:
    """Register a device (its telemetry is accepted within the gateway's cache TTL) or update it; moving a device
    with telemetry to another product or account needs `force=true`."""
    row = DeviceRow(device_id, body.product_id, body.account_id, body.activated_at, body.plan, body.experiment_arm)
    if unknown := _unknown_refs(conn, [row]):
        raise Unprocessable(unknown[0][2], details=[ErrorDetail(loc=["body", column], message=message)
                                                    for _, column, message in unknown])
    if not force and (moved := reattributed_history(conn, devices=[row])):
        raise Conflict(f"{moved[device_id]}; send force=true to move it with its history")
    upsert_devices(conn, devices=[row])
    return _device(get_device(conn, device_id=device_id))


@router.delete("/devices/{device_id}", status_code=204, response_class=Response,
               responses={404: {"description": "Unknown device"}, 409: {"description": "It has telemetry"}})
def delete_device(_: AdminKey, conn: LightConnDep, device_id: IdPath) -> Response:
    """Delete a device that has no stored telemetry (history is never orphaned)."""
    if get_device(conn, device_id=device_id) is None:
        raise NotFound(f"no device {device_id!r}")
    if count_references(conn, device_id=device_id) > 0:
        raise Conflict(f"device {device_id!r} has stored telemetry; it stays registered to keep its history")
    delete_registry_entry(conn, table="devices", key=device_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- CSV import

_TP_FIELDS = ("touchpoint", "journey_stage", "owner", "is_core", "target_latency_ms", "target_duration_s", "unit")
_CSV_COLUMNS = {
    "products": CsvColumns(required=("product_id",),
                           optional=("name", "heartbeat_interval_s", "expected_active_days_per_week", *_TP_FIELDS)),
    "accounts": CsvColumns(required=("account_id",), optional=("name", "segment")),
    "devices": CsvColumns(required=("device_id",),
                          optional=("product_id", "account_id", "activated_at", "plan", "experiment_arm")),
}
_ID = TypeAdapter(Ident)
_DEVICE_ID = TypeAdapter(DeviceIdent)


def _id_problem(value: str | None, adapter: TypeAdapter = _ID) -> str | None:
    """Why `value` is not a valid id, or None."""
    if not value:
        return "an id is required"
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    return None


def _parse_products(rows: Iterable[CsvRow], problems: CsvProblems) -> list[ProductRow]:
    """Products from rows of one touchpoint each (a product's own columns repeat on each of its rows)."""
    grouped: dict[str, tuple[int, dict[str, str], list[CsvRow]]] = {}
    for row in rows:
        product_id = row.cells.get("product_id", "")
        head = {k: v for k, v in row.cells.items() if k not in _TP_FIELDS and k != "product_id"}
        first_line, first_head, touchpoints = grouped.setdefault(product_id, (row.line, head, []))
        if head and first_head != head and first_line != row.line:
            problems.add(row.line, message=f"product {product_id!r} differs from line {first_line}")
        if row.cells.get("touchpoint"):
            touchpoints.append(row)
    products = []
    for product_id, (line, head, touchpoints) in grouped.items():
        if (bad := _id_problem(product_id)) is not None:
            problems.add(line, "product_id", message=bad)
            continue
        try:
            body = ProductIn.model_validate({**head, "touchpoints": [
                {k: v for k, v in t.cells.items() if k in _TP_FIELDS} for t in touchpoints]})
        except ValidationError as exc:
            for error in exc.errors():
                path = [str(p) for p in error["loc"]]
                index = error["loc"][1] if len(error["loc"]) > 1 and error["loc"][0] == "touchpoints" else None
                problems.add(touchpoints[index].line if isinstance(index, int) else line, *path,
                             message=error["msg"])
            continue
        products.append(_product_row(product_id, body))
    return products


def _parse_accounts(rows: Iterable[CsvRow], problems: CsvProblems) -> list[AccountRow]:
    """Accounts from rows, one each."""
    accounts = []
    for row in rows:
        if (bad := _id_problem(row.cells.get("account_id"))) is not None:
            problems.add(row.line, "account_id", message=bad)
            continue
        try:
            body = AccountIn.model_validate({k: v for k, v in row.cells.items() if k != "account_id"})
        except ValidationError as exc:
            problems.add_invalid(row.line, exc, row.cells)
            continue
        accounts.append(AccountRow(row.cells["account_id"], body.name, body.segment))
    return accounts


def _parse_devices(conn: psycopg.Connection, rows: Iterable[CsvRow], problems: CsvProblems,
                   lines: list[int]) -> list[DeviceRow]:
    """Devices from rows, one each; once every row is valid, the products and accounts they name must exist."""
    devices: list[DeviceRow] = []
    first_line: dict[str, int] = {}
    for row in rows:
        if (bad := _id_problem(row.cells.get("device_id"), _DEVICE_ID)) is not None:
            problems.add(row.line, "device_id", message=bad)
            continue
        # one upsert cannot write a row twice, and which of two rows should win is the file's author's call
        if (seen := first_line.setdefault(row.cells["device_id"], row.line)) != row.line:
            problems.add(row.line, "device_id",
                         message=f"device {row.cells['device_id']!r} is on line {seen} and line {row.line}")
            continue
        try:
            body = DeviceIn.model_validate({k: v for k, v in row.cells.items() if k != "device_id"})
        except ValidationError as exc:
            problems.add_invalid(row.line, exc, row.cells)
            continue
        devices.append(DeviceRow(row.cells["device_id"], body.product_id, body.account_id, body.activated_at,
                                 body.plan, body.experiment_arm))
        lines.append(row.line)
    if not problems.details:
        for i, column, message in _unknown_refs(conn, devices):
            problems.add(lines[i], column, message=message)
    return devices


class _Counted:
    """An iterator of CSV rows that counts what it yielded."""

    def __init__(self, rows: Iterable[CsvRow]) -> None:
        self.rows, self.count = iter(rows), 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> CsvRow:
        row = next(self.rows)
        self.count += 1
        return row


@router.post("/{kind}/import", response_model=ImportResult, summary="Import products, accounts or devices from CSV",
             responses={400: {"model": ErrorBody, "description": "The multipart body could not be parsed"},
                        422: {"description": "Bad rows; nothing was imported"},
                        409: {"description": "Devices with telemetry would move to another product or account"
                                             " (see `force`); nothing was imported"}})
def import_csv(
    _: AdminKey,
    conn: ConnDep,  # an import can take a while: the main pool, not the small one kept for cheap requests
    kind: Literal["products", "accounts", "devices"],
    file: Annotated[UploadFile, File(description="CSV with a header row (see docs/api.md for the columns)")],
    force: ForceQuery = False,
) -> ImportResult:
    """All rows or none: every problem is reported with its line, and a file with any bad row stores nothing."""
    # rows are parsed as the spooled upload is read: only the compact parsed rows are held, never the file's text
    rows = _Counted(iter_csv(file.file, columns=_CSV_COLUMNS[kind], loc=line_loc, max_bytes=MAX_CSV_BYTES))
    problems = CsvProblems(line_loc)
    if kind == "products":
        products = _parse_products(rows, problems)
        problems.raise_any(outcome="; nothing was imported")
        stored = upsert_products(conn, products=products)
    elif kind == "accounts":
        accounts = _parse_accounts(rows, problems)
        problems.raise_any(outcome="; nothing was imported")
        stored = upsert_accounts(conn, accounts=accounts)
    else:
        lines: list[int] = []
        devices = _parse_devices(conn, rows, problems, lines)
        problems.raise_any(outcome="; nothing was imported")
        if not force and (moved := reattributed_history(conn, devices=devices)):
            line_of = {d.device_id: line for d, line in zip(devices, lines, strict=True)}
            first = min(moved, key=line_of.__getitem__)
            raise Conflict(f"{len(moved)} device(s) would move with their telemetry; nothing was imported; send"
                           f" force=true to move them. First: line {line_of[first]}: {moved[first]}",
                           details=[ErrorDetail(loc=line_loc(line_of[d], "device_id"), message=m)
                                    for d, m in sorted(moved.items(), key=lambda kv: line_of[kv[0]])])
        stored = upsert_devices(conn, devices=devices)
    return ImportResult(kind=kind, rows=rows.count, stored=stored)

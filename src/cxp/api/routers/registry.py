"""Registry endpoints (role `admin`): products with touchpoints, accounts, devices — CRUD and CSV import."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from cxp.api.deps import AdminKey, ConnDep, PageDep
from cxp.api.errors import Conflict, ErrorDetail, NotFound, Unprocessable
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, csv_response
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
    upsert_accounts,
    upsert_devices,
    upsert_products,
)

router = APIRouter(prefix="/v1/registry", tags=["registry"])

Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
IdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Text = Annotated[str, Field(min_length=1, max_length=200)]
MAX_CSV_BYTES = 20 * 1024 * 1024


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Touchpoint(_In):
    """One touchpoint of a product's catalogue: where it sits in the journey and who owns it."""

    touchpoint: Ident
    journey_stage: Literal["pre_purchase", "purchase", "post_purchase"]
    owner: Literal["brand", "partner", "customer", "external"]
    is_core: bool = False
    target_latency_ms: Annotated[float, Field(gt=0, le=86_400_000)] | None = None
    target_duration_s: Annotated[float, Field(gt=0, le=86_400 * 30)] | None = None
    unit: Annotated[str, Field(max_length=40)] | None = None


class ProductIn(_In):
    """A product model and its touchpoint catalogue (replaced as a whole)."""

    name: Text
    heartbeat_interval_s: Annotated[int, Field(gt=0, le=7 * 86_400)] = 3600
    expected_active_days_per_week: Annotated[float, Field(ge=0, le=7)] | None = None
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


class Page(BaseModel):
    """A page of registry entries."""

    total: int
    limit: int
    offset: int


class ProductPage(Page):
    """A page of products."""

    items: list[Product]


class AccountPage(Page):
    """A page of accounts."""

    items: list[Account]


class DevicePage(Page):
    """A page of devices."""

    items: list[Device]


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


def _check_device_refs(conn, devices: list[tuple[int, DeviceRow]]) -> list[ErrorDetail]:
    """Unknown products or accounts named by devices, as details pointing at the line (or body)."""
    products = {r[0] for r in conn.execute("SELECT product_id FROM products WHERE product_id = ANY(%s)",
                                           ([d.product_id for _, d in devices],)).fetchall()}
    accounts = {r[0] for r in conn.execute("SELECT account_id FROM accounts WHERE account_id = ANY(%s)",
                                           ([d.account_id for _, d in devices if d.account_id],)).fetchall()}
    problems = []
    for line, d in devices:
        loc: list[str | int] = ["line", line] if line else ["body"]
        if d.product_id not in products:
            problems.append(ErrorDetail(loc=[*loc, "product_id"], message=f"unknown product {d.product_id!r}"))
        if d.account_id and d.account_id not in accounts:
            problems.append(ErrorDetail(loc=[*loc, "account_id"], message=f"unknown account {d.account_id!r}"))
    return problems


# ---------------------------------------------------------------------------------------------- products

@router.get("/products", response_model=ProductPage, summary="Products with their touchpoint catalogues")
def list_products_view(_: AdminKey, conn: ConnDep, page: PageDep) -> ProductPage:
    """Products by id."""
    rows, total = list_products(conn, limit=page.limit, offset=page.offset)
    return ProductPage(items=[_product(p) for p in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/products/{product_id}", response_model=Product, responses={404: {"description": "Unknown product"}})
def get_product_view(_: AdminKey, conn: ConnDep, product_id: IdPath) -> Product:
    """One product."""
    p = get_product(conn, product_id=product_id)
    if p is None:
        raise NotFound(f"no product {product_id!r}")
    return _product(p)


@router.put("/products/{product_id}", response_model=Product, summary="Create or replace a product")
def put_product(_: AdminKey, conn: ConnDep, product_id: IdPath, body: ProductIn) -> Product:
    """Create the product or replace it and its touchpoint catalogue."""
    upsert_products(conn, products=[_product_row(product_id, body)])
    return _product(get_product(conn, product_id=product_id))


@router.delete("/products/{product_id}", status_code=204, response_class=Response,
               responses={404: {"description": "Unknown product"}, 409: {"description": "Devices use it"}})
def delete_product(_: AdminKey, conn: ConnDep, product_id: IdPath) -> Response:
    """Delete a product no device uses."""
    if (n := count_references(conn, product_id=product_id)) > 0:
        raise Conflict(f"product {product_id!r} has {n} devices; delete or move them first")
    if not delete_registry_entry(conn, table="products", key=product_id):
        raise NotFound(f"no product {product_id!r}")
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- accounts

@router.get("/accounts", response_model=AccountPage, responses=CSV_RESPONSES, summary="Customer accounts")
def list_accounts_view(
    _: AdminKey, conn: ConnDep, page: PageDep,
    segment: Annotated[str | None, Query(max_length=100)] = None, format: FormatQuery = "json",
) -> AccountPage | Response:
    """Accounts by id, optionally of one segment."""
    rows, total = list_accounts(conn, segment=segment, limit=page.limit, offset=page.offset)
    if format == "csv":
        return csv_response(rows, filename="accounts", columns=("account_id", "name", "segment"))
    return AccountPage(items=[Account(account_id=a.account_id, name=a.name, segment=a.segment) for a in rows],
                       total=total, limit=page.limit, offset=page.offset)


@router.get("/accounts/{account_id}", response_model=Account, responses={404: {"description": "Unknown account"}})
def get_account_view(_: AdminKey, conn: ConnDep, account_id: IdPath) -> Account:
    """One account."""
    a = get_account(conn, account_id=account_id)
    if a is None:
        raise NotFound(f"no account {account_id!r}")
    return Account(account_id=a.account_id, name=a.name, segment=a.segment)


@router.put("/accounts/{account_id}", response_model=Account, summary="Create or replace an account")
def put_account(_: AdminKey, conn: ConnDep, account_id: IdPath, body: AccountIn) -> Account:
    """Create or update an account."""
    upsert_accounts(conn, accounts=[AccountRow(account_id, body.name, body.segment)])
    return Account(account_id=account_id, **body.model_dump())


@router.delete("/accounts/{account_id}", status_code=204, response_class=Response,
               responses={404: {"description": "Unknown account"}, 409: {"description": "Devices belong to it"}})
def delete_account(_: AdminKey, conn: ConnDep, account_id: IdPath) -> Response:
    """Delete an account that owns no device."""
    if (n := count_references(conn, account_id=account_id)) > 0:
        raise Conflict(f"account {account_id!r} owns {n} devices; delete or move them first")
    if not delete_registry_entry(conn, table="accounts", key=account_id):
        raise NotFound(f"no account {account_id!r}")
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- devices

@router.get("/devices", response_model=DevicePage, responses=CSV_RESPONSES, summary="Registered devices")
def list_devices_view(
    _: AdminKey, conn: ConnDep, page: PageDep,
    product: Annotated[str | None, Query(max_length=128)] = None,
    account: Annotated[str | None, Query(max_length=128)] = None,
    format: FormatQuery = "json",
) -> DevicePage | Response:
    """Devices by id, optionally of one product and/or account."""
    rows, total = list_devices(conn, product_id=product, account_id=account, limit=page.limit, offset=page.offset)
    if format == "csv":
        return csv_response(rows, filename="devices", columns=(
            "device_id", "product_id", "account_id", "activated_at", "plan", "experiment_arm"))
    return DevicePage(items=[_device(d) for d in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/devices/{device_id}", response_model=Device, responses={404: {"description": "Unknown device"}})
def get_device_view(_: AdminKey, conn: ConnDep, device_id: IdPath) -> Device:
    """One device."""
    d = get_device(conn, device_id=device_id)
    if d is None:
        raise NotFound(f"no device {device_id!r}")
    return _device(d)


@router.put("/devices/{device_id}", response_model=Device, summary="Register or update a device")
def put_device(_: AdminKey, conn: ConnDep, device_id: IdPath, body: DeviceIn) -> Device:
    """Register a device (its telemetry is accepted within the gateway's cache TTL) or update it."""
    row = DeviceRow(device_id, body.product_id, body.account_id, body.activated_at, body.plan, body.experiment_arm)
    if problems := _check_device_refs(conn, [(0, row)]):
        raise Unprocessable(problems[0].message, details=problems)
    upsert_devices(conn, devices=[row])
    return _device(get_device(conn, device_id=device_id))


@router.delete("/devices/{device_id}", status_code=204, response_class=Response,
               responses={404: {"description": "Unknown device"}, 409: {"description": "It has telemetry"}})
def delete_device(_: AdminKey, conn: ConnDep, device_id: IdPath) -> Response:
    """Delete a device that has no stored telemetry (history is never orphaned)."""
    if get_device(conn, device_id=device_id) is None:
        raise NotFound(f"no device {device_id!r}")
    if count_references(conn, device_id=device_id) > 0:
        raise Conflict(f"device {device_id!r} has stored telemetry; it stays registered to keep its history")
    delete_registry_entry(conn, table="devices", key=device_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- CSV import

_CSV_COLUMNS = {
    "products": ("product_id", "name", "heartbeat_interval_s", "expected_active_days_per_week", "touchpoint",
                 "journey_stage", "owner", "is_core", "target_latency_ms", "target_duration_s", "unit"),
    "accounts": ("account_id", "name", "segment"),
    "devices": ("device_id", "product_id", "account_id", "activated_at", "plan", "experiment_arm"),
}
_TP_FIELDS = ("touchpoint", "journey_stage", "owner", "is_core", "target_latency_ms", "target_duration_s", "unit")


def _read_csv(raw: bytes, kind: str) -> list[tuple[int, dict[str, Any]]]:
    if len(raw) > MAX_CSV_BYTES:
        raise Unprocessable(f"the file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB; split it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(f"the file is not UTF-8 text (byte {exc.start})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise Unprocessable(f"not valid CSV in the header line: {exc}") from exc
    key = _CSV_COLUMNS[kind][0]
    if key not in header:
        raise Unprocessable(f"the header must name the columns; expected {', '.join(_CSV_COLUMNS[kind])}",
                            details=[ErrorDetail(loc=["line", 1], message=f"missing column {key!r}")])
    unknown = sorted(set(header) - set(_CSV_COLUMNS[kind]))
    if unknown:
        raise Unprocessable(f"unknown columns {', '.join(unknown)}; expected {', '.join(_CSV_COLUMNS[kind])}",
                            details=[ErrorDetail(loc=["line", 1], message=f"unknown column {u!r}") for u in unknown])
    rows = []
    try:
        for n, rec in enumerate(reader, start=2):
            cleaned = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in rec.items() if k is not None}
            if None in rec:
                raise Unprocessable(f"line {n}: more fields than header columns",
                                    details=[ErrorDetail(loc=["line", n], message="more fields than columns")])
            rows.append((n, {k: v for k, v in cleaned.items() if v not in ("", None)}))
    except csv.Error as exc:
        raise Unprocessable(f"not valid CSV: {exc}") from exc
    if not rows:
        raise Unprocessable("the file has a header but no rows")
    return rows


_ID = TypeAdapter(Ident)


def _id_problem(value: str | None) -> str | None:
    """Why `value` is not a valid id, or None."""
    if not value:
        return "an id is required"
    try:
        _ID.validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    return None


def _errors(line: int, exc: ValidationError) -> list[ErrorDetail]:
    return [ErrorDetail(loc=["line", line, *[str(p) for p in e["loc"]]], message=e["msg"]) for e in exc.errors()]


def _parse_products(rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[ProductRow], list[ErrorDetail]]:
    grouped: dict[str, tuple[int, dict[str, Any], list[dict[str, Any]]]] = {}
    problems: list[ErrorDetail] = []
    for line, rec in rows:
        pid = rec.get("product_id", "")
        head = {k: v for k, v in rec.items() if k not in _TP_FIELDS and k != "product_id"}
        first = grouped.setdefault(pid, (line, head, []))
        if head and first[1] != head and first[0] != line:
            problems.append(ErrorDetail(loc=["line", line], message=f"product {pid!r} differs from line {first[0]}"))
        if rec.get("touchpoint"):
            first[2].append({k: rec[k] for k in _TP_FIELDS if k in rec} | {"_line": line})
    out = []
    for pid, (line, head, tps) in grouped.items():
        if (bad := _id_problem(pid)) is not None:
            problems.append(ErrorDetail(loc=["line", line, "product_id"], message=bad))
            continue
        try:
            body = ProductIn.model_validate({**head, "touchpoints": [
                {k: v for k, v in t.items() if k != "_line"} for t in tps]})
            out.append(_product_row(pid, body))
        except ValidationError as exc:
            for e in exc.errors():
                loc = list(e["loc"])
                at = tps[loc[1]]["_line"] if loc[:1] == ["touchpoints"] and len(loc) > 1 and isinstance(
                    loc[1], int) else line
                problems.append(ErrorDetail(loc=["line", at, *[str(p) for p in loc]], message=e["msg"]))
    return out, problems


@router.post("/{kind}/import", response_model=ImportResult, summary="Import products, accounts or devices from CSV",
             responses={422: {"description": "Bad rows; nothing was imported"}})
def import_csv(
    _: AdminKey,
    conn: ConnDep,
    kind: Literal["products", "accounts", "devices"],
    file: Annotated[UploadFile, File(description="CSV with a header row (see docs/api.md for the columns)")],
) -> ImportResult:
    """All rows or none: every problem is reported with its line, and a file with any bad row stores nothing."""
    rows = _read_csv(file.file.read(MAX_CSV_BYTES + 1), kind)
    problems: list[ErrorDetail] = []
    if kind == "products":
        products, problems = _parse_products(rows)
        if not problems:
            return ImportResult(kind=kind, rows=len(rows), stored=upsert_products(conn, products=products))
    elif kind == "accounts":
        accounts = []
        for line, rec in rows:
            if (bad := _id_problem(rec.get("account_id"))) is not None:
                problems.append(ErrorDetail(loc=["line", line, "account_id"], message=bad))
                continue
            try:
                body = AccountIn.model_validate({k: v for k, v in rec.items() if k != "account_id"})
                accounts.append(AccountRow(rec["account_id"], body.name, body.segment))
            except ValidationError as exc:
                problems += _errors(line, exc)
        if not problems:
            return ImportResult(kind=kind, rows=len(rows), stored=upsert_accounts(conn, accounts=accounts))
    else:
        devices: list[tuple[int, DeviceRow]] = []
        for line, rec in rows:
            if (bad := _id_problem(rec.get("device_id"))) is not None:
                problems.append(ErrorDetail(loc=["line", line, "device_id"], message=bad))
                continue
            try:
                body = DeviceIn.model_validate({k: v for k, v in rec.items() if k != "device_id"})
                devices.append((line, DeviceRow(rec["device_id"], body.product_id, body.account_id,
                                                body.activated_at, body.plan, body.experiment_arm)))
            except ValidationError as exc:
                problems += _errors(line, exc)
        if not problems:
            problems = _check_device_refs(conn, devices)
        if not problems:
            return ImportResult(kind=kind, rows=len(rows), stored=upsert_devices(conn, devices=[d for _, d in devices]))
    raise Unprocessable(f"{len(problems)} problem(s) in the file; nothing was imported. First: line "
                        f"{problems[0].loc[1] if len(problems[0].loc) > 1 else '?'}: {problems[0].message}",
                        details=problems[:200])

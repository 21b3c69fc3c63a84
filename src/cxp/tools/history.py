"""History files of a simulated fleet, in the formats `cxp import` reads: JSON lines (one contract message per line)
and the flat per-event layout (one event per row) as CSV or Parquet. For the import benchmark, the analytics
benchmark's fleet build and the tests."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cxp.importer.readers import COLUMNS, JSON_COLUMNS


def fleet_messages(
    fleet: Any,
    *,
    devices: Iterable[Any] | None = None,
    until: Any = None,
    events_per_message: int = 1000,
    upload_interval_s: float = 6 * 3600,
) -> Iterator[bytes]:
    """The fleet's messages (contract JSON), each with its device_id, as a bulk history export would hold them."""
    from cxp.device_sim import plan_messages

    for m in plan_messages(
        fleet=fleet,
        devices=devices,
        end=until,
        upload_interval_s=upload_interval_s,
        max_events_per_message=events_per_message,
    ):
        body = json.loads(m.payload)
        body["device_id"] = m.device_id
        yield json.dumps(body, separators=(",", ":")).encode()


def flat_rows(messages: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """One row per event of the layout's columns (JSON columns as JSON text, absent values None)."""
    for payload in messages:
        body = json.loads(payload)
        for event in body["events"]:
            row = dict.fromkeys(COLUMNS)
            row["device_id"] = body["device_id"]
            for key, value in event.items():
                row[key] = json.dumps(value) if key in JSON_COLUMNS else value
            yield row


def write_jsonl(path: Path, messages: Iterable[bytes]) -> int:
    """Write one message per line; the number of lines."""
    n = 0
    with path.open("wb") as f:
        for payload in messages:
            f.write(payload + b"\n")
            n += 1
    return n


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write the flat layout as CSV (header + one row per event); the number of rows."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(COLUMNS)
        for row in rows:
            out.writerow([_text(row[c]) for c in COLUMNS])
            n += 1
    return n


def write_parquet(path: Path, rows: Iterable[dict[str, Any]], *, row_group_rows: int = 50_000) -> int:
    """Write the flat layout as Parquet (typed columns, `ts` as text: RFC 3339 as in the contract)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("device_id", pa.string()),
            ("seq", pa.int64()),
            ("ts", pa.string()),
            ("kind", pa.string()),
            ("touchpoint", pa.string()),
            ("success", pa.bool_()),
            ("duration_s", pa.float64()),
            ("quantity", pa.float64()),
            ("unit", pa.string()),
            ("latency_ms", pa.float64()),
            ("code", pa.string()),
            ("severity", pa.string()),
            ("nps", pa.int64()),
            ("csat", pa.int64()),
            ("ces", pa.int64()),
            ("stage", pa.string()),
            ("detail", pa.string()),
            ("battery_pct", pa.float64()),
            ("signal_dbm", pa.float64()),
            ("uptime_s", pa.float64()),
            ("energy_wh", pa.float64()),
            ("metrics", pa.string()),
        ]
    )
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        block: list[dict[str, Any]] = []
        for row in rows:
            block.append(row)
            if len(block) >= row_group_rows:
                writer.write_table(pa.Table.from_pylist(block, schema=schema))
                n += len(block)
                block = []
        if block:
            writer.write_table(pa.Table.from_pylist(block, schema=schema))
            n += len(block)
    return n


def write_history(path: Path, fmt: str, messages: Iterable[bytes]) -> int:
    """Write messages as `fmt` (jsonl: lines; csv, parquet: event rows); how many lines or rows."""
    if fmt == "jsonl":
        return write_jsonl(path, messages)
    if fmt == "csv":
        return write_csv(path, flat_rows(messages))
    return write_parquet(path, flat_rows(messages))


def device_of(payload: bytes) -> str:
    """The device_id a history message names."""
    return json.loads(payload)["device_id"]


def import_fleet(conn: Any, *, fleet_params: dict[str, Any], settings: Any, out: Any) -> Any:
    """Register the fleet and load its whole history through `cxp import` (a JSON-lines file in a temporary
    directory): contract validation and the checkpoint included, rollups refreshed. The import's result."""
    import tempfile

    from cxp.device_sim import build_fleet
    from cxp.importer import import_file
    from cxp.tools.fleet import register_fleet

    fleet = build_fleet(**fleet_params)
    register_fleet(conn, fleet=fleet)
    with tempfile.TemporaryDirectory(prefix="cxp-fleet-") as tmp:
        path = Path(tmp) / "fleet.jsonl"
        lines = write_jsonl(path, fleet_messages(fleet))
        out(f"wrote {lines:,} messages ({path.stat().st_size / 2**20:.0f} MiB); importing…")
        return import_file(conn, settings=settings, path=path, fmt="jsonl")

"""Ingest operations (role `admin`): gateway throughput and lag, storage lag, dead-lettered messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from cxp.api.cursors import cursor_time, decode_cursor, page_of
from cxp.api.deps import AdminKey, KeysetPageDep, LightConnDep
from cxp.api.schemas import CSV_RESPONSES, FormatQuery, Page, csv_response
from cxp.store.leader import get_leader
from cxp.store.ops import (
    DeadLetter,
    SeqGaps,
    StorageLag,
    count_dead_letters_by_reason,
    get_seq_gaps,
    get_storage_lag,
    list_dead_letters,
    list_gateway_throughput,
)

router = APIRouter(prefix="/v1/ingest", tags=["ingest operations"])


class Gateway(BaseModel):
    """One gateway process as it last reported."""

    gateway_id: str
    last_report_at: datetime
    seconds_since_report: float
    reporting: bool
    state: Literal["running", "stopped", "dead"]
    leader: bool
    messages_per_s: float | None
    events_per_s: float | None
    dead_letters_per_s: float | None
    rate_window_s: float | None
    publish_to_commit_ms_p50: float | None
    publish_to_commit_ms_p99: float | None
    counters: dict[str, Any]


class IngestStatus(BaseModel):
    """Throughput and lag of ingestion, and what was refused."""

    gateways: list[Gateway]
    leader: str | None = Field(description="The gateway holding the group's leader lock (rollups, alerts, retention)"
                                           " now, from the database's locks; None: no leader at this moment")
    gateways_running: int
    gateways_dead: int = Field(description="Instances whose last report is older than three stats intervals and that"
                                           " did not report a clean stop (killed, hung, or cut off from the database)")
    storage: StorageLag
    dead_letters_by_reason: dict[str, int]
    sequence_gaps: SeqGaps


@router.get("/status", response_model=IngestStatus, summary="Throughput, lag and dead letters by reason")
def get_ingest_status(
    _: AdminKey,
    conn: LightConnDep,
    window_s: Annotated[int, Query(ge=10, le=3600, description="Seconds the rates are measured over")] = 60,
    since: Annotated[AwareDatetime | None, Query(description="Count dead letters received since")] = None,
    gap_devices: Annotated[int, Query(ge=0, le=1000, description="Devices with the most missing seqs shown")] = 10,
) -> IngestStatus:
    """Each gateway's rates over the last `window_s`, publish→commit latency, rollup backlog, dead letters, and
    sequence gaps: per device, the seqs between its lowest and highest stored that never arrived (lost at the broker
    or on the device; a late message fills its gap)."""
    gateways = []
    for g in list_gateway_throughput(conn, window_s=window_s):
        state = g.state
        gateways.append(Gateway(
            gateway_id=g.gateway_id, last_report_at=g.last_report_at, seconds_since_report=g.seconds_since_report,
            reporting=g.reporting, state=state, leader=state == "running" and bool(g.snapshot.get("leader")),
            messages_per_s=g.messages_per_s, events_per_s=g.events_per_s, dead_letters_per_s=g.dead_letters_per_s,
            rate_window_s=g.window_s, publish_to_commit_ms_p50=g.snapshot.get("publish_to_commit_ms_p50"),
            publish_to_commit_ms_p99=g.snapshot.get("publish_to_commit_ms_p99"), counters=g.snapshot))
    leader = get_leader(conn)
    return IngestStatus(gateways=gateways, leader=leader.name if leader else None,
                        gateways_running=sum(g.state == "running" for g in gateways),
                        gateways_dead=sum(g.state == "dead" for g in gateways), storage=get_storage_lag(conn),
                        dead_letters_by_reason=count_dead_letters_by_reason(conn, since=since),
                        sequence_gaps=get_seq_gaps(conn, top=gap_devices))


@router.get("/dead-letters", response_model=Page[DeadLetter], responses=CSV_RESPONSES,
            summary="Refused messages with their reasons")
def list_dead_letters_view(
    _: AdminKey,
    conn: LightConnDep,
    page: KeysetPageDep,
    reason: Annotated[str | None, Query(max_length=100)] = None,
    device: Annotated[str | None, Query(max_length=200)] = None,
    since: AwareDatetime | None = None,
    format: FormatQuery = "json",
) -> Page[DeadLetter] | Response:
    """Filter by reason, device or time; `format=csv` downloads the page; `next_cursor` pages on by keyset."""
    before = None
    if page.cursor is not None:
        at, row_id = decode_cursor(page.cursor, "dead-letters", (str, int))
        before = (cursor_time(str(at)), int(row_id))
    rows, total = list_dead_letters(conn, reason=reason, device_id=device, since=since, limit=page.limit + 1,
                                    offset=page.offset, before=before)
    items, cursor = page_of(rows, limit=page.limit, kind="dead-letters",
                            key=lambda d: (d.received_at.isoformat(), d.id))
    if format == "csv":
        return csv_response(items, filename="dead-letters")
    return Page[DeadLetter](items=items, total=total, limit=page.limit, offset=page.offset, next_cursor=cursor)


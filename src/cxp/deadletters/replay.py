"""Re-ingest dead letters that pass after a fix, each exactly once.

Each chunk of letters is one transaction: the events they carry are stored and the letters marked replayed
together, so a replay cut off half-way leaves the rest pending and never stores a letter twice. Letters that still
fail stay pending; a cursor on the id keeps one run from examining them twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from cxp.contract.validate import Accepted, validate_message
from cxp.core.config import Settings
from cxp.store.errors import mapped_errors
from cxp.store.ingest import IngestMessage, TimeBounds, write_batch_isolating
from cxp.store.registry import DeviceCache

CHUNK = 1000  # dead letters per transaction

_FILTER = """
replayed_at IS NULL AND (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))
"""

_PICK = f"""
SELECT id, topic, extract(epoch FROM received_at), payload, payload_bytes FROM dead_letters
WHERE {_FILTER} AND id > %(after)s
ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


@dataclass
class ReplayResult:
    """What one replay did: dead letters stored, refused again (a new dead letter), still failing, truncated."""

    examined: int = 0
    stored: list[int] = field(default_factory=list)
    dead_lettered_again: list[int] = field(default_factory=list)
    still_invalid: dict[int, str] = field(default_factory=dict)
    truncated: list[int] = field(default_factory=list)
    events_stored: int = 0


def count_pending(
    conn: psycopg.Connection, *, reason: str | None = None, ids: list[int] | None = None, limit: int | None = None
) -> tuple[int, int]:
    """How many dead letters a replay with these filters would examine (at most `limit`), and their payload bytes."""
    with mapped_errors():
        letters, size = conn.execute(
            f"SELECT count(*), coalesce(sum(payload_bytes), 0) FROM (SELECT payload_bytes FROM dead_letters"
            f" WHERE {_FILTER} ORDER BY id LIMIT %(limit)s) p",
            {"reason": reason, "ids": ids, "limit": limit},
        ).fetchone()
    return int(letters), int(size)


def replay_dead_letters(
    conn: psycopg.Connection,
    *,
    settings: Settings,
    reason: str | None = None,
    ids: list[int] | None = None,
    limit: int = 1000,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Validate up to `limit` pending dead letters again (oldest first); store those that pass and mark them
    replayed, a chunk per transaction. `dry_run` rolls every chunk back. `progress(examined)` after each chunk."""
    cfg = settings.gateway
    bounds = TimeBounds(
        max_future_skew_s=float(cfg.max_future_skew_s),
        max_age_s=float(settings.retention_days * 86400) if settings.retention_days else None,
    )
    devices = DeviceCache()
    devices.load(conn)
    out = ReplayResult()
    after = 0
    while out.examined < limit:
        picked = _replay_chunk(
            conn,
            settings=settings,
            devices=devices,
            bounds=bounds,
            out=out,
            dry_run=dry_run,
            params={"reason": reason, "ids": ids, "after": after, "limit": min(CHUNK, limit - out.examined)},
        )
        if picked is None:
            break
        after = picked
        if progress is not None:
            progress(out.examined)
    return out


def _replay_chunk(
    conn: psycopg.Connection,
    *,
    settings: Settings,
    devices: DeviceCache,
    bounds: TimeBounds,
    out: ReplayResult,
    dry_run: bool,
    params: dict,
) -> int | None:
    """One chunk in one transaction; the last id examined, or None when nothing was pending."""
    cfg = settings.gateway
    with mapped_errors(), conn.transaction() as tx:
        rows = conn.execute(_PICK, params).fetchall()
        if not rows:
            return None
        out.examined += len(rows)
        messages: list[IngestMessage] = []
        letter_ids: list[int] = []
        for letter_id, topic, received_at, payload, payload_bytes in rows:
            payload = bytes(payload or b"")
            if len(payload) < payload_bytes:  # kept only in part (before whole payloads were kept)
                out.truncated.append(letter_id)
                continue
            verdict = validate_message(
                topic=topic,
                payload=payload,
                lookup_device=devices.lookup,
                max_payload_bytes=cfg.max_payload_bytes,
                topic_prefix=settings.mqtt.topic_prefix,
            )
            if type(verdict) is not Accepted:
                out.still_invalid[letter_id] = f"{verdict.reason.value}: {verdict.detail}"
                continue
            messages.append(
                IngestMessage(
                    topic,
                    verdict.device_id,
                    verdict.device_key,
                    verdict.canonical,
                    float(received_at),
                    verdict.activated_epoch,
                    payload,
                )
            )
            letter_ids.append(letter_id)
        if messages:
            result = write_batch_isolating(
                conn, messages=messages, bounds=bounds, payload_cap=cfg.dead_letter_payload_cap
            )
            refused = {i for i, _, _ in result.rejected}
            out.events_stored += result.events_stored + result.states_stored
            stored = [letter_id for i, letter_id in enumerate(letter_ids) if i not in refused]
            again = [letter_id for i, letter_id in enumerate(letter_ids) if i in refused]
            out.stored += stored
            out.dead_lettered_again += again
            for outcome, marked in (("stored", stored), ("dead_lettered_again", again)):
                if marked:
                    conn.execute(
                        "UPDATE dead_letters SET replayed_at = now(), replay_outcome = %s WHERE id = ANY(%s)",
                        (outcome, marked),
                    )
        if dry_run:
            raise psycopg.Rollback(tx)  # leaves the block, nothing committed
    return rows[-1][0]

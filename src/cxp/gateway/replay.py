"""Re-ingest dead letters that pass after a fix, each exactly once."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from cxp.core.config import Settings
from cxp.gateway.validate import Accepted, validate_message
from cxp.gateway.writer import DeviceCache
from cxp.store.errors import mapped_errors
from cxp.store.ingest import IngestMessage, TimeBounds, write_batch_isolating

_PICK = """
SELECT id, topic, extract(epoch FROM received_at), payload, payload_bytes FROM dead_letters
WHERE replayed_at IS NULL AND (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))
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


def replay_dead_letters(
    conn: psycopg.Connection, *, settings: Settings, reason: str | None = None, ids: list[int] | None = None,
    limit: int = 1000, dry_run: bool = False,
) -> ReplayResult:
    """Validate pending dead letters again; store those that pass and mark them replayed, in one transaction."""
    cfg = settings.gateway
    bounds = TimeBounds(max_future_skew_s=float(cfg.max_future_skew_s),
                        max_age_s=float(settings.retention_days * 86400) if settings.retention_days else None)
    devices = DeviceCache()
    devices.load(conn)
    out = ReplayResult()
    with mapped_errors(), conn.transaction() as tx:
        rows = conn.execute(_PICK, {"reason": reason, "ids": ids, "limit": limit}).fetchall()
        out.examined = len(rows)
        messages: list[IngestMessage] = []
        letter_ids: list[int] = []
        for letter_id, topic, received_at, payload, payload_bytes in rows:
            payload = bytes(payload or b"")
            if len(payload) < payload_bytes:  # kept only in part (before whole payloads were kept)
                out.truncated.append(letter_id)
                continue
            verdict = validate_message(topic=topic, payload=payload, lookup_device=devices.lookup,
                                       max_payload_bytes=cfg.max_payload_bytes,
                                       topic_prefix=settings.mqtt.topic_prefix)
            if type(verdict) is not Accepted:
                out.still_invalid[letter_id] = f"{verdict.reason.value}: {verdict.detail}"
                continue
            messages.append(IngestMessage(topic, verdict.device_id, verdict.device_key, verdict.canonical,
                                          float(received_at), verdict.activated_epoch, payload))
            letter_ids.append(letter_id)
        if messages:
            result = write_batch_isolating(conn, messages=messages, bounds=bounds,
                                           payload_cap=cfg.dead_letter_payload_cap)
            refused = {i for i, _, _ in result.rejected}
            out.events_stored = result.events_stored + result.states_stored
            for i, letter_id in enumerate(letter_ids):
                (out.dead_lettered_again if i in refused else out.stored).append(letter_id)
            for outcome, marked in (("stored", out.stored), ("dead_lettered_again", out.dead_lettered_again)):
                if marked:
                    conn.execute("UPDATE dead_letters SET replayed_at = now(), replay_outcome = %s"
                                 " WHERE id = ANY(%s)", (outcome, marked))
        if dry_run:
            raise psycopg.Rollback(tx)  # leaves the block, nothing committed
    return out

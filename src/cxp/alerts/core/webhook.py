"""Webhook payloads (JSON or Slack-compatible), idempotency keys and HMAC-SHA256 signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

SIGNATURE_HEADER = "X-Cxp-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_WINDOW_S = 300


def idempotency_key(*, alert_id: int, event: str, channel_url: str) -> str:
    """Stable per alert × event × channel: a redelivery carries the same key, so receivers can dedupe."""
    return hashlib.sha256(f"{alert_id}\x00{event}\x00{channel_url}".encode()).hexdigest()[:32]


def payload(*, alert: dict, event: str, key: str, at: datetime, fmt: str) -> dict:
    """The notification body; `alert` is the alert's JSON-ready fields."""
    body = {"type": f"alert.{event}", "idempotency_key": key, "at": at.isoformat(), "alert": alert}
    if fmt == "slack":
        icon = {"opened": ":rotating_light:", "cleared": ":white_check_mark:"}.get(event, ":bell:")
        text = (f"{icon} [{alert.get('severity', '')}] {alert.get('rule')} {event}: {alert.get('entity')}"
                f" {json.dumps(alert.get('values', {}), sort_keys=True)}")
        return {"text": text, **body}
    return body


def encode(body: dict) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(*, secret: bytes, body: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`; the timestamp bounds replays."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(*, secret: bytes, body: bytes, header: str, now: int, window_s: int = REPLAY_WINDOW_S) -> bool:
    """A receiver's check: a valid MAC over a timestamp within the replay window."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > window_s:
        return False
    expected = sign(secret=secret, body=body, timestamp=timestamp).split(",", 1)[1]
    return hmac.compare_digest(expected, f"v1={parts.get('v1', '')}")

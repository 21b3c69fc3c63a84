"""Delivery from the outbox (signed webhooks, e-mail): retried with backoff and jitter, in order, at least once."""

from __future__ import annotations

import json
import logging
import random
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import psycopg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from cxp.alerts.core.routing import hold_until
from cxp.alerts.core.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, encode, sign
from cxp.alerts.errors import AlertError, DeliveryFailed
from cxp.core.config import AlertSettings, Settings
from cxp.store.db import connect
from cxp.store.errors import StoreError, mapped_errors

log = logging.getLogger("cxp.alerts.delivery")

_DELIVERY_LOCK = 0x6378_7017  # one deliverer at a time keeps each channel's order
_MAX_BACKOFF_S = 300.0  # between delivery passes of a failing channel (within a pass: tenacity's backoff)
_BATCH = 200

# (url, body, headers, timeout) -> HTTP status; raises OSError when there is no answer.
Post = Callable[[str, bytes, dict[str, str], float], int]


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST with the standard library; the HTTP status, 4xx/5xx included."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http(s) only: the rule validates it)
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def send_email(to: str, raw: bytes, key: str, settings: AlertSettings) -> int:
    """One notification as a plain-text e-mail; 250 when the server accepted it (SMTP's own success code)."""
    if not settings.smtp_host:
        raise DeliveryFailed("no SMTP server configured (CXP_ALERTS__SMTP_HOST)")
    body = json.loads(raw)
    alert = body["alert"]
    msg = EmailMessage()
    msg["From"], msg["To"] = settings.smtp_from, to
    msg["Subject"] = f"[{alert['severity']}] {alert['rule']} {body['type'].removeprefix('alert.')}: {alert['entity']}"
    msg["X-Cxp-Idempotency-Key"] = key
    msg.set_content(body.get("text", "") + "\n\n" + json.dumps(body, indent=2, sort_keys=True))
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.webhook_timeout_s) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        smtp.send_message(msg)
    return 250


@dataclass
class DeliveryPass:
    """What one pass delivered."""

    delivered: int = 0
    failed_channels: int = 0
    attempts: int = 0


def read_secret(secrets_dir: Path, ref: str) -> bytes:
    """A channel's signing secret from `<secrets_dir>/<ref>.secret`; never sent unsigned."""
    path = secrets_dir / f"{ref}.secret"
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise DeliveryFailed(f"no signing secret {ref!r} in {secrets_dir}") from exc
    if len(secret) < 16:
        raise DeliveryFailed(f"signing secret {ref!r} is shorter than 16 bytes")
    return secret


def deliver_pending(conn: psycopg.Connection, *, settings: AlertSettings, post: Post = http_post,
                    now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> DeliveryPass | None:
    """Send every due notification, oldest first per channel; a channel stops at its first failure.

    None when another process is delivering. A notification is marked delivered only after a 2xx, so a
    crash or an outage means a later redelivery with the same idempotency key (at least once).
    """
    result = DeliveryPass()
    with mapped_errors():
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_DELIVERY_LOCK,)).fetchone()[0]:
            return None
        try:
            channels = [r[0] for r in conn.execute(
                "SELECT DISTINCT channel_url FROM alert_outbox WHERE delivered_at IS NULL").fetchall()]
            for url in channels:
                if not _deliver_channel(conn, url=url, settings=settings, post=post, now=now, result=result):
                    result.failed_channels += 1
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_DELIVERY_LOCK,))
    return result


def _deliver_channel(conn: psycopg.Connection, *, url: str, settings: AlertSettings, post: Post,
                     now: Callable[[], datetime], result: DeliveryPass) -> bool:
    rows = conn.execute(
        "SELECT id, secret_ref, idempotency_key, body, attempts, next_attempt_at, severity, policy FROM alert_outbox"
        " WHERE channel_url = %s AND delivered_at IS NULL ORDER BY id LIMIT %s", (url, _BATCH)).fetchall()
    for outbox_id, secret_ref, key, body, attempts, next_at, severity, policy in rows:
        if next_at > now():
            return False  # order: nothing later on this channel goes before this one
        if policy:
            sent = [r[0] for r in conn.execute(
                "SELECT delivered_at FROM alert_outbox WHERE channel_url = %s AND delivered_at > %s",
                (url, now() - timedelta(hours=1))).fetchall()] if policy.get("max_per_hour") else []
            held = hold_until(policy, severity=severity, now=now(), sent_last_hour=sent)
            if held is not None:  # quiet hours or rate limit: later, in order, not a failure
                conn.execute("UPDATE alert_outbox SET next_attempt_at = %s WHERE id = %s", (held, outbox_id))
                return True
        attempt_no = attempts
        try:
            secret = b"" if url.startswith("mailto:") else read_secret(settings.secrets_dir, secret_ref)
            raw = encode(body)
            for attempt in Retrying(stop=stop_after_attempt(settings.webhook_attempts), reraise=True,
                                    wait=wait_random_exponential(multiplier=0.2, max=5),
                                    retry=retry_if_exception_type(DeliveryFailed)):
                with attempt:
                    attempt_no += 1
                    result.attempts += 1
                    _post_once(conn, outbox_id=outbox_id, url=url, raw=raw, key=key, secret=secret,
                               attempt_no=attempt_no, settings=settings, post=post)
        except DeliveryFailed as exc:
            backoff = min(_MAX_BACKOFF_S, 2.0 ** min(attempt_no, 12)) * random.uniform(0.5, 1.0)
            conn.execute("UPDATE alert_outbox SET attempts = %s, next_attempt_at = %s WHERE id = %s",
                         (attempt_no, now() + timedelta(seconds=backoff), outbox_id))
            log.warning("webhook %s: %s (retry in %.0f s)", url, exc, backoff)
            return False
        conn.execute("UPDATE alert_outbox SET attempts = %s, delivered_at = %s WHERE id = %s",
                     (attempt_no, now(), outbox_id))
        result.delivered += 1
    return True


def _post_once(conn: psycopg.Connection, *, outbox_id: int, url: str, raw: bytes, key: str, secret: bytes,
               attempt_no: int, settings: AlertSettings, post: Post) -> None:
    status, error = None, None
    try:
        if url.startswith("mailto:"):
            status = send_email(url.removeprefix("mailto:"), raw, key, settings)
        else:
            headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key,
                       SIGNATURE_HEADER: sign(secret=secret, body=raw, timestamp=int(time.time()))}
            status = post(url, raw, headers, settings.webhook_timeout_s)
    except (OSError, smtplib.SMTPException) as exc:
        error = str(exc)[:500]
    conn.execute("INSERT INTO alert_deliveries (outbox_id, attempt, status, error) VALUES (%s, %s, %s, %s)",
                 (outbox_id, attempt_no, status, error))
    if status is None or not (200 <= status < 300 or status == 250):
        raise DeliveryFailed(error or f"HTTP {status}")


def delivery_loop(settings: Settings, wake: threading.Event, stopping: threading.Event | None = None,
                  idle_s: float = 1.0) -> None:
    """Deliver whenever woken (an evaluation raised something) and every `idle_s` (retries come due)."""
    conn = None
    while stopping is None or not stopping.is_set():
        wake.wait(idle_s)
        wake.clear()
        try:
            conn = conn if conn is not None and not conn.closed else connect(settings.db)
            deliver_pending(conn, settings=settings.alerts)
        except (AlertError, StoreError) as exc:
            log.warning("alert delivery failed: %s", exc)
            conn = None
        except Exception:  # keep delivering: the outbox keeps what was not sent
            log.exception("alert delivery failed")
            conn = None


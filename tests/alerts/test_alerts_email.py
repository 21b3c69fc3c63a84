"""E-mail channels against a real local SMTP server (aiosmtpd): one mail per notification, queued while down."""

from __future__ import annotations

import email
import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller

from cxp.alerts import repository
from cxp.alerts.core.rules import parse_ruleset
from cxp.alerts.delivery import deliver_pending
from cxp.alerts.evaluator import evaluate
from cxp.core.config import AlertSettings
from tests.alerts.test_alerts_db import alert_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


class Sink:
    """Keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_email_channel_sends_one_mail_per_notification_and_waits_for_the_server(alert_db, tmp_path):  # noqa: F811
    db = alert_db
    port = _free_port()
    settings = AlertSettings(secrets_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=port, webhook_attempts=1)
    rules = {"rules": [{"name": "offline", "severity": "critical", "hold_down_s": 0,
                        "params": {"kind": "silence", "k": 3}, "channels": [{"email": "pm@example.org"}]}]}
    repository.import_rules(db, rules=list(parse_ruleset(json.dumps(rules)).rules))
    now = datetime.now(UTC)
    db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices",
               (now - timedelta(hours=5),))
    db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 2 FROM devices"
               " WHERE device_id <> 'dev-004'", (now,))
    assert evaluate(db, now=now).opened == 1
    assert deliver_pending(db, settings=settings).delivered == 0  # no server yet: stays queued
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        later = lambda: datetime.now(UTC) + timedelta(hours=1)  # noqa: E731 (past the backoff)
        assert deliver_pending(db, settings=settings, now=later).delivered == 1
        assert deliver_pending(db, settings=settings, now=later).delivered == 0
    finally:
        controller.stop()
    [mail] = sink.messages
    assert mail["To"] == "pm@example.org" and mail["Subject"] == "[critical] offline opened: dev-004"
    assert mail["X-Cxp-Idempotency-Key"]
    assert '"entity": "dev-004"' in mail.get_payload()

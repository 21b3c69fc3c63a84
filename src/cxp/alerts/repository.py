"""Alert rules (versioned), live alerts, history and the webhook outbox in PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cxp.alerts.core.lifecycle import Event, Live, State, acknowledge
from cxp.alerts.core.rules import Rule, WebhookChannel, parse_rule
from cxp.alerts.core.webhook import idempotency_key, payload
from cxp.alerts.errors import AlertNotFound
from cxp.store.errors import mapped_errors

NOTIFIED = (Event.OPENED, Event.CLEARED)
_ALERT_COLS = (
    "alert_id, rule_name, rule_version, entity, state, severity, trigger_values, first_seen, last_seen,"
    " false_since, acked_by, acked_at, cleared_at, product_id, touchpoint"
)


def import_rules(conn: psycopg.Connection, *, rules: list[Rule], by: str | None = None) -> list[tuple[str, int, bool]]:
    """Store each rule as a new version when its definition changed; return (name, version, changed)."""
    out = []
    with mapped_errors(), conn.transaction():
        for rule in rules:
            row = conn.execute(
                "SELECT version, definition FROM alert_rules WHERE name = %s ORDER BY version DESC LIMIT 1 FOR UPDATE",
                (rule.name,),
            ).fetchone()
            if row is not None and row[1] == rule.definition():
                out.append((rule.name, row[0], False))
                continue
            version = 1 if row is None else row[0] + 1
            conn.execute(
                "INSERT INTO alert_rules (name, version, kind, definition, created_by) VALUES (%s, %s, %s, %s, %s)",
                (rule.name, version, rule.kind, Jsonb(rule.definition()), by),
            )
            out.append((rule.name, version, True))
    return out


def current_rules(conn: psycopg.Connection, *, enabled_only: bool = False) -> list[Rule]:
    """The newest version of every rule, by name."""
    with mapped_errors():
        rows = conn.execute(
            "SELECT DISTINCT ON (name) version, definition FROM alert_rules ORDER BY name, version DESC"
        ).fetchall()
    rules = [parse_rule({**definition, "version": version}) for version, definition in rows]
    return [r for r in rules if r.enabled] if enabled_only else rules


def rule_versions(conn: psycopg.Connection, *, name: str) -> list[dict]:
    """Every version of one rule, newest first."""
    with mapped_errors():
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT version, created_at, created_by, definition FROM alert_rules WHERE name = %s"
                " ORDER BY version DESC",
                (name,),
            )
            .fetchall()
        )
    if not rows:
        raise AlertNotFound(f"no rule {name!r}")
    return rows


def cadence_state(conn: psycopg.Connection) -> dict[str, tuple[int, datetime]]:
    """When each cadence rule (incident, health, churn, voice) was last evaluated: name → (version, time)."""
    rows = conn.execute("SELECT key, watermark FROM alert_eval_state WHERE starts_with(key, 'rule:')").fetchall()
    out = {}
    for key, at in rows:
        _, name, version = key.split(":", 2)
        if name not in out or int(version) > out[name][0]:
            out[name] = (int(version), at)
    return out


def record_cadence(conn: psycopg.Connection, *, rule: Rule, now: datetime) -> None:
    """Remember that a cadence rule was evaluated at `now` (a new rule version starts afresh)."""
    conn.execute("DELETE FROM alert_eval_state WHERE starts_with(key, %s)", (f"rule:{rule.name}:",))
    conn.execute(
        "INSERT INTO alert_eval_state (key, watermark) VALUES (%s, %s)", (f"rule:{rule.name}:{rule.version}", now)
    )


def live_alerts(conn: psycopg.Connection, *, rule_name: str) -> dict[str, tuple[int, Live]]:
    """The live alerts of one rule by entity."""
    rows = conn.execute(
        "SELECT entity, alert_id, state, first_seen, last_seen, false_since, acked_by FROM alerts"
        " WHERE rule_name = %s AND state <> 'cleared'",
        (rule_name,),
    ).fetchall()
    return {r[0]: (r[1], Live(State(r[2]), r[3], r[4], r[5], r[6])) for r in rows}


def open_alert(
    conn: psycopg.Connection,
    *,
    rule: Rule,
    entity: str,
    values: dict,
    now: datetime,
    product_id: str | None = None,
    touchpoint: str | None = None,
) -> int:
    """Insert a new open alert, its history entry and its notifications (caller's transaction).

    `product_id` / `touchpoint`: set when the alert is about a product or a product's touchpoint as a whole (the
    charts mark those)."""
    alert_id = conn.execute(
        "INSERT INTO alerts (rule_name, rule_version, entity, state, severity, trigger_values, first_seen, last_seen,"
        " product_id, touchpoint) VALUES (%s, %s, %s, 'open', %s, %s, %s, %s, %s, %s) RETURNING alert_id",
        (rule.name, rule.version, entity, rule.severity, Jsonb(values), now, now, product_id, touchpoint),
    ).fetchone()[0]
    _record(conn, alert_id=alert_id, event=Event.OPENED, now=now, detail=values)
    _enqueue(conn, rule=rule, alert_id=alert_id, event=Event.OPENED, now=now)
    return alert_id


def update_alerts(conn: psycopg.Connection, *, rows: list[tuple[int, Live, dict]]) -> None:
    """Refresh live alerts' last-seen, hold-down start and latest values in one statement."""
    if rows:
        conn.execute(
            "UPDATE alerts a SET last_seen = u.last_seen, false_since = u.false_since,"
            " trigger_values = CASE WHEN u.has THEN u.vals ELSE a.trigger_values END"
            " FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::bool[], %s::jsonb[])"
            "   AS u(id, last_seen, false_since, has, vals) WHERE a.alert_id = u.id",
            (
                [r[0] for r in rows],
                [r[1].last_seen for r in rows],
                [r[1].false_since for r in rows],
                [bool(r[2]) for r in rows],
                [Jsonb(r[2]) for r in rows],
            ),
        )


def clear_alert(conn: psycopg.Connection, *, rule: Rule, alert_id: int, now: datetime) -> None:
    """Mark an alert cleared, record it and notify (caller's transaction)."""
    conn.execute("UPDATE alerts SET state = 'cleared', cleared_at = %s WHERE alert_id = %s", (now, alert_id))
    _record(conn, alert_id=alert_id, event=Event.CLEARED, now=now, detail=None)
    _enqueue(conn, rule=rule, alert_id=alert_id, event=Event.CLEARED, now=now)


def acknowledge_alert(conn: psycopg.Connection, *, alert_id: int, by: str, now: datetime) -> dict:
    """Acknowledge a live alert (idempotent); a cleared or unknown one is AlertNotFound."""
    with mapped_errors(), conn.transaction():
        row = conn.execute(
            "SELECT state, first_seen, last_seen, false_since, acked_by FROM alerts"
            " WHERE alert_id = %s AND state <> 'cleared' FOR UPDATE",
            (alert_id,),
        ).fetchone()
        if row is None:
            raise AlertNotFound(f"no live alert {alert_id}")
        live, event = acknowledge(Live(State(row[0]), row[1], row[2], row[3], row[4]), by=by)
        if event is not None:
            conn.execute(
                "UPDATE alerts SET state = 'acknowledged', acked_by = %s, acked_at = %s WHERE alert_id = %s",
                (by, now, alert_id),
            )
            _record(conn, alert_id=alert_id, event=event, now=now, detail=None, actor=by)
    return get_alert(conn, alert_id=alert_id)


def get_alert(conn: psycopg.Connection, *, alert_id: int) -> dict:
    """One alert with its history and delivery log."""
    with mapped_errors():
        cur = conn.cursor(row_factory=dict_row)
        alert = cur.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()
        if alert is None:
            raise AlertNotFound(f"no alert {alert_id}")
        alert["history"] = cur.execute(
            "SELECT at, event, actor, detail FROM alert_history WHERE alert_id = %s ORDER BY id", (alert_id,)
        ).fetchall()
        alert["deliveries"] = cur.execute(
            "SELECT o.event, o.channel_url, o.idempotency_key, o.delivered_at, d.at, d.attempt, d.status, d.error"
            " FROM alert_outbox o LEFT JOIN alert_deliveries d ON d.outbox_id = o.id WHERE o.alert_id = %s"
            " ORDER BY o.id, d.id",
            (alert_id,),
        ).fetchall()
    return alert


def list_alerts(conn: psycopg.Connection, *, live_only: bool = False, limit: int = 100) -> list[dict]:
    """Alerts newest first; `live_only`: open and acknowledged ones."""
    where = "WHERE state <> 'cleared'" if live_only else ""
    with mapped_errors():
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"SELECT {_ALERT_COLS} FROM alerts {where} ORDER BY first_seen DESC, alert_id DESC LIMIT %s", (limit,)
            )
            .fetchall()
        )


def list_markers(
    conn: psycopg.Connection,
    *,
    start: datetime,
    end: datetime,
    product_id: str | None = None,
    touchpoint: bool = False,
    limit: int = 500,
) -> list[dict]:
    """Alerts about a product (or, `touchpoint`, a product's touchpoint) live at some time in [start, end): opened
    before `end` and not cleared before `start`; newest first, with their rule's kind. For chart markers."""
    where = [
        "a.product_id IS NOT NULL",
        "a.first_seen < %(end)s",
        "(a.cleared_at IS NULL OR a.cleared_at >= %(start)s)",
    ]
    if product_id is not None:
        where.append("a.product_id = %(product)s")
    if touchpoint:
        where.append("a.touchpoint IS NOT NULL")
    with mapped_errors():
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"SELECT a.alert_id, a.rule_name, r.kind, a.entity, a.state, a.severity, a.first_seen, a.cleared_at,"
                f" a.product_id, a.touchpoint, a.trigger_values FROM alerts a"
                f" JOIN alert_rules r ON r.name = a.rule_name AND r.version = a.rule_version"
                f" WHERE {' AND '.join(where)} ORDER BY a.first_seen DESC, a.alert_id DESC LIMIT %(limit)s",
                {"start": start, "end": end, "product": product_id, "limit": limit},
            )
            .fetchall()
        )


def alert_json(row: dict) -> dict:
    """An alert row as notification / API JSON."""
    return {
        "id": row["alert_id"],
        "rule": row["rule_name"],
        "rule_version": row["rule_version"],
        "entity": row["entity"],
        "state": row["state"],
        "severity": row["severity"],
        "product_id": row.get("product_id"),
        "touchpoint": row.get("touchpoint"),
        "values": row["trigger_values"],
        "first_seen": _iso(row["first_seen"]),
        "last_seen": _iso(row["last_seen"]),
        "acked_by": row["acked_by"],
        "cleared_at": _iso(row["cleared_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _record(
    conn: psycopg.Connection,
    *,
    alert_id: int,
    event: Event,
    now: datetime,
    detail: dict | None,
    actor: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO alert_history (alert_id, at, event, actor, detail) VALUES (%s, %s, %s, %s, %s)",
        (alert_id, now, str(event), actor, Jsonb(detail) if detail is not None else None),
    )


def _enqueue(conn: psycopg.Connection, *, rule: Rule, alert_id: int, event: Event, now: datetime) -> None:
    if not rule.channels:
        return
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE alert_id = %s", (alert_id,))
        .fetchone()
    )
    alert = alert_json(row)
    for ch in rule.channels:
        # An e-mail channel is the address as a mailto: URL; it needs no signing secret.
        url, secret_ref, fmt = (
            (ch.url, ch.secret_ref, ch.format)
            if isinstance(ch, WebhookChannel)
            else (f"mailto:{ch.email}", "", "slack")
        )
        key = idempotency_key(alert_id=alert_id, event=str(event), channel_url=url)
        body = payload(alert=alert, event=str(event), key=key, at=now, fmt=fmt)
        conn.execute(
            "INSERT INTO alert_outbox (alert_id, event, channel_url, secret_ref, idempotency_key, body,"
            " severity, policy) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (
                alert_id,
                str(event),
                url,
                secret_ref,
                key,
                Jsonb(json.loads(json.dumps(body))),
                rule.severity,
                Jsonb(ch.policy()),
            ),
        )

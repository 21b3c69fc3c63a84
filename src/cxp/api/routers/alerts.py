"""Alerts: `product` reads and acknowledges alerts (/v1/alerts); `admin` reads and edits rules (/v1/alert-rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cxp.alerts import repository
from cxp.alerts.core.rules import RuleSet
from cxp.api.deps import AdminKey, ConnDep, ProductKey

router = APIRouter(tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RuleName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


@router.get("/v1/alert-rules", summary="Export the current version of every rule (the import format)")
def export_rules(conn: ConnDep, _key: AdminKey) -> RuleSet:
    return RuleSet(rules=tuple(repository.current_rules(conn)))


@router.put("/v1/alert-rules", summary="Import rules: a changed definition becomes the rule's next version")
def import_rules(ruleset: RuleSet, conn: ConnDep, key: AdminKey) -> dict[str, Any]:
    stored = repository.import_rules(conn, rules=list(ruleset.rules), by=key.name)
    return {"rules": [{"name": n, "version": v, "changed": c} for n, v, c in stored]}


@router.get("/v1/alert-rules/{name}/versions", summary="Every version of one rule, newest first")
def rule_versions(name: RuleName, conn: ConnDep, _key: AdminKey) -> list[dict[str, Any]]:
    return repository.rule_versions(conn, name=name)


@router.get("/v1/alerts", summary="Alerts, newest first (live_only: open and acknowledged)")
def list_alerts(conn: ConnDep, _key: ProductKey, live_only: bool = False,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    return [repository.alert_json(r) for r in repository.list_alerts(conn, live_only=live_only, limit=limit)]


@router.get("/v1/alerts/{alert_id}", summary="One alert with its history and webhook delivery log")
def get_alert(alert_id: AlertId, conn: ConnDep, _key: ProductKey) -> dict[str, Any]:
    row = repository.get_alert(conn, alert_id=alert_id)
    return repository.alert_json(row) | {"history": row["history"], "deliveries": row["deliveries"]}


@router.post("/v1/alerts/{alert_id}/ack", summary="Acknowledge a live alert (idempotent)")
def acknowledge(alert_id: AlertId, conn: ConnDep, key: ProductKey) -> dict[str, Any]:
    row = repository.acknowledge_alert(conn, alert_id=alert_id, by=key.name, now=datetime.now(UTC))
    return repository.alert_json(row) | {"history": row["history"]}


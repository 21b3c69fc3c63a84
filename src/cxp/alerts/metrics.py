"""Prometheus figures of alerts, read from the database at scrape time (the evaluator runs in the gateway)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("cxp.alerts.metrics")

_QUERY = """
SELECT (SELECT coalesce(json_object_agg(k, n), '{}') FROM (
          SELECT state || '|' || severity AS k, count(*) AS n FROM alerts GROUP BY 1) s),
       (SELECT count(*) FROM alerts),
       (SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL),
       (SELECT count(*) FROM alert_outbox WHERE delivered_at IS NOT NULL),
       (SELECT count(*) FROM alert_deliveries WHERE status IS NULL OR status NOT BETWEEN 200 AND 299)
"""


class AlertCollector(Collector):
    """Alert counts by state × severity, alerts opened, notifications pending / delivered, failed attempts."""

    def __init__(self, connection: Callable[[], AbstractContextManager[psycopg.Connection]]) -> None:
        self.connection = connection

    def collect(self) -> Iterator:
        """One query per scrape; a database that does not answer yields only cxp_alerts_scrape_ok 0."""
        ok = GaugeMetricFamily("cxp_alerts_scrape_ok", "1 when the alert figures could be read")
        try:
            with self.connection() as conn:
                by_state, opened, pending, delivered, failed = conn.execute(_QUERY).fetchone()
        except Exception as exc:  # noqa: BLE001 - /metrics must answer whatever the database does
            log.debug("alert metrics unavailable: %s", exc)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok
        alerts = GaugeMetricFamily("cxp_alerts", "Alerts by state and severity", labels=["state", "severity"])
        for key, n in sorted(by_state.items()):
            state, severity = key.split("|", 1)
            alerts.add_metric([state, severity], n)
        yield alerts
        yield CounterMetricFamily("cxp_alerts_opened", "Alerts ever opened", value=opened)
        yield GaugeMetricFamily("cxp_alert_notifications_pending", "Webhook notifications not yet delivered",
                                value=pending)
        yield CounterMetricFamily("cxp_alert_notifications_delivered", "Webhook notifications delivered (2xx)",
                                  value=delivered)
        yield CounterMetricFamily("cxp_alert_delivery_failures", "Webhook attempts without a 2xx answer",
                                  value=failed)

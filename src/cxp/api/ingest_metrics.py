"""Prometheus figures of the gateway group, read from the database at scrape time (gateways report there)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cxp.store.leader import get_leader
from cxp.store.ops import list_gateway_throughput

log = logging.getLogger("cxp.api.ingest_metrics")

_STATES = ("running", "stopped", "dead")
_COUNTERS = (
    "received",
    "messages_stored",
    "events_stored",
    "duplicates",
    "dead_lettered",
    "db_retries",
    "writer_restarts",
)


class GatewayCollector(Collector):
    """Per gateway instance: state, leadership, seconds since its last report, rates and its own counters."""

    def __init__(self, connection: Callable[[], AbstractContextManager[psycopg.Connection]]) -> None:
        self.connection = connection

    def collect(self) -> Iterator:
        """One read per scrape; a database that does not answer yields only cxp_gateway_scrape_ok 0."""
        ok = GaugeMetricFamily("cxp_gateway_scrape_ok", "1 when the gateway figures could be read")
        try:
            with self.connection() as conn:
                gateways = list_gateway_throughput(conn, window_s=60)
                leader = get_leader(conn)
        except Exception as exc:  # noqa: BLE001 - /metrics must answer whatever the database does
            log.debug("gateway metrics unavailable: %s", exc)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok
        state = GaugeMetricFamily(
            "cxp_gateway_up",
            "1 for the instance's state (running, stopped, dead: silent for"
            " three stats intervals without a clean stop)",
            labels=["gateway", "state"],
        )
        age = GaugeMetricFamily(
            "cxp_gateway_seconds_since_report", "Seconds since the instance last reported", labels=["gateway"]
        )
        leads = GaugeMetricFamily(
            "cxp_gateway_leader", "1 for the instance holding the leader lock", labels=["gateway"]
        )
        rate = GaugeMetricFamily(
            "cxp_gateway_events_per_second", "Events stored per second over the last minute", labels=["gateway"]
        )
        counters = {
            name: CounterMetricFamily(
                f"cxp_gateway_{name}", f"The instance's {name.replace('_', ' ')} since it started", labels=["gateway"]
            )
            for name in _COUNTERS
        }
        for g in gateways:
            for s in _STATES:
                state.add_metric([g.gateway_id, s], int(g.state == s))
            age.add_metric([g.gateway_id], g.seconds_since_report)
            leads.add_metric([g.gateway_id], int(leader is not None and leader.name == g.gateway_id))
            if g.events_per_s is not None:
                rate.add_metric([g.gateway_id], g.events_per_s)
            for name, family in counters.items():
                family.add_metric([g.gateway_id], float(g.snapshot.get(name) or 0))
        yield from (state, age, leads, rate, *counters.values())
        yield GaugeMetricFamily(
            "cxp_gateways_dead",
            "Gateway instances silent without a clean stop",
            value=sum(g.state == "dead" for g in gateways),
        )

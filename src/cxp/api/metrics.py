"""Prometheus metrics of the API process: requests by route template, status and latency."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from cxp.store.ops import get_seq_gaps

log = logging.getLogger("cxp.api.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Error codes (errors.ERROR_TABLE) that mean "overloaded", by the reason label they are counted under.
OVERLOAD_REASONS = {"too_many_requests": "heavy_slots", "busy": "pool_timeout", "compute_busy": "compute_slots"}


class ApiMetrics:
    """One registry per app, so tests can build several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cxp_api_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("cxp_api_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)
        self.refused = Counter("cxp_api_refused_total", "Requests the guard refused before the app (by status)",
                               ["status"], registry=self.registry)
        self.body_bytes = Counter("cxp_api_body_bytes_total", "Request body bytes read by /v1 routes",
                                  registry=self.registry)
        self.overload = Counter("cxp_api_overload_total", "Requests refused for load, by reason: heavy_slots (429, the"
                                " key's heavy-request slots are all in use) or pool_timeout (503 busy, no database"
                                " connection free in time)", ["reason", "route"], registry=self.registry)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def count_failure(request: Request, code: str) -> None:
    """Count an answered failure whose code means overload (429 heavy slots, 503 busy) under its route template."""
    reason = OVERLOAD_REASONS.get(code)
    metrics = getattr(request.app.state, "metrics", None)
    if reason is not None and isinstance(metrics, ApiMetrics):
        metrics.overload.labels(reason, getattr(request.scope.get("route"), "path", "(unmatched)")).inc()


class MetricsMiddleware(BaseHTTPMiddleware):
    """Count and time each request under its route template (not the raw path: ids would explode the labels)."""

    def __init__(self, app, metrics: ApiMetrics) -> None:  # noqa: ANN001 - starlette's ASGI app type
        super().__init__(app)
        self.metrics = metrics

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "(unmatched)")
            self.metrics.requests.labels(request.method, template, str(status)).inc()
            self.metrics.latency.labels(request.method, template).observe(time.perf_counter() - t0)


class IngestCollector(Collector):
    """Sequence gaps read at scrape time: missing seqs in total, devices with gaps, the worst devices by name."""

    TOP = 10  # devices labelled by id (a bounded label set)

    def __init__(self, connection: Callable[[], AbstractContextManager[psycopg.Connection]]) -> None:
        self.connection = connection

    def collect(self) -> Iterator:
        """Two small queries per scrape; a database that does not answer yields only cxp_ingest_scrape_ok 0."""
        ok = GaugeMetricFamily("cxp_ingest_scrape_ok", "1 when the ingest figures could be read")
        try:
            with self.connection() as conn:
                gaps = get_seq_gaps(conn, top=self.TOP)
        except Exception as exc:  # noqa: BLE001 - /metrics must answer whatever the database does
            log.debug("ingest metrics unavailable: %s", exc)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok
        yield GaugeMetricFamily("cxp_ingest_seq_missing", "Seqs never stored between each device's lowest and highest"
                                " stored seq, summed over devices (loss, or messages not arrived yet)",
                                value=gaps.missing_total)
        yield GaugeMetricFamily("cxp_ingest_devices_with_seq_gaps", "Devices with at least one missing seq",
                                value=gaps.devices_with_gaps)
        yield GaugeMetricFamily("cxp_ingest_devices_seq_tracked", "Devices with stored seqs",
                                value=gaps.devices_tracked)
        worst = GaugeMetricFamily("cxp_ingest_device_seq_missing", f"Missing seqs of the {self.TOP} devices with the"
                                  " most", labels=["device_id"])
        for device in gaps.top:
            worst.add_metric([device.device_id], device.missing)
        yield worst

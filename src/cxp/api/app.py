"""The FastAPI application: `/v1` API, health and readiness, Prometheus metrics, dashboard pages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from cxp.alerts.metrics import AlertCollector
from cxp.api.cache import ResultCache
from cxp.api.deps import KeyCache
from cxp.api.docs import install_offline_docs
from cxp.api.errors import ErrorBody, install_error_handlers
from cxp.api.fairness import ComputeGate, KeySlots
from cxp.api.guard import FailedAuthThrottle, RequestGuard
from cxp.api.housekeeping import housekeeping
from cxp.api.ingest_metrics import GatewayCollector
from cxp.api.jobs import JobRunner
from cxp.api.metrics import CONTENT_TYPE, ApiMetrics, IngestCollector, MetricsMiddleware
from cxp.api.routers import (
    alerts,
    credentials,
    dashboard,
    dead_letters,
    earned_growth,
    experience,
    imports,
    ingest,
    measures,
    pricing,
    registry,
    touchpoint_survey,
)
from cxp.core.config import Settings, get_settings
from cxp.core.memory import release_free_memory
from cxp.identity.service import Sweeper
from cxp.store.db import create_pool, create_read_pool
from cxp.store.errors import StoreError
from cxp.store.migrate import list_migrations

log = logging.getLogger("cxp.api")

API_VERSION = "1.0.0"
_ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in (
    (401, "No valid API key"), (403, "The key's role may not use this endpoint"), (408, "The body arrived too slowly"),
    (413, "The body is over the endpoint's size limit"), (422, "Invalid request"),
    (429, "Too many failed authentications from this address, or too many heavy requests running for this key"
          " (see Retry-After)"),
    (503, "Every database connection or computation slot is busy, or the database is unavailable"
          " (see Retry-After)"))}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the pool and the job runner start with it and stop with it."""
    settings = settings or get_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Starts while the database is down: /readyz and every request say 503 until it answers.
        app.state.pool = create_pool(settings.db, name="cxp-api", wait=False, timeout=settings.api.pool_timeout_s)
        # Cheap requests get connections of their own, so a burst of analytics cannot make them wait (0: shared).
        light = settings.api.light_pool_size
        app.state.light_pool = app.state.pool if light <= 0 else create_pool(
            settings.db.model_copy(update={"pool_min": 1, "pool_max": light}), name="cxp-api-light", wait=False,
            timeout=settings.api.pool_timeout_s)
        # Analytics reads and key checks: a standby within the lag bound when the database is replicated
        # (CXP_DB__MEMBERS), else the main pool; so they keep answering while the primary fails over.
        app.state.read_pool = create_read_pool(settings.db, primary=app.state.pool, name="cxp-api-read",
                                               timeout=settings.api.pool_timeout_s)
        # Jobs have a pool of their own (a connection per worker, one for progress), so a long job never holds
        # a connection a request is waiting for; their status is read through the small pool of cheap requests.
        workers = settings.api.job_workers
        app.state.job_pool = create_pool(settings.db.model_copy(update={"pool_min": 1, "pool_max": workers + 1}),
                                         name="cxp-api-jobs", wait=False, timeout=30.0)
        app.state.jobs = JobRunner(pool=app.state.job_pool, workers=workers, requests_pool=app.state.light_pool)
        try:
            app.state.jobs.recover()
        except Exception as exc:  # noqa: BLE001 - an unmigrated database must not stop /readyz from saying so
            log.warning("could not recover jobs: %s", exc)
        # Ends rotation grace windows and keeps the broker's CRL fresh (identity/service.py).
        sweeper = Sweeper(connection=app.state.light_pool.connection, settings=settings).start()
        try:
            async with housekeeping(app.state, session_purge_s=settings.api.session_purge_s):
                yield
        finally:
            sweeper.stop()
            app.state.jobs.shutdown()
            app.state.job_pool.close()
            if app.state.read_pool is not app.state.pool:
                app.state.read_pool.close()
            app.state.pool.close()
            if app.state.light_pool is not app.state.pool:
                app.state.light_pool.close()

    app = FastAPI(
        title="Connected-product experience platform",
        version=API_VERSION,
        description=(
            "Experience analytics and the pricing lab over devices' usage telemetry. Authenticate with an API key "
            "(`Authorization: Bearer <key>` or `X-API-Key`); roles: `product` (experience), `pricing` (pricing), "
            "`admin` (everything, plus registry, keys and ingest operations). Errors share one body: "
            "`{\"error\": {\"status\", \"code\", \"message\", \"details\"}}`."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by install_offline_docs from installed files, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.api.key_cache_s, {})
    app.state.compute_gate = ComputeGate(slots=settings.api.compute_slots, wait_s=settings.api.compute_wait_s,
                                         retry_after_s=settings.api.heavy_retry_after_s, after=release_free_memory)
    app.state.results = ResultCache(ttl_s=settings.api.cache_ttl_s, max_entries=settings.api.cache_entries,
                                     fresh_s=settings.api.cache_fresh_s, gate=app.state.compute_gate.hold)
    app.state.heavy_slots = KeySlots(limit=settings.api.heavy_per_key, retry_after_s=settings.api.heavy_retry_after_s)
    app.state.metrics = metrics
    # Alert figures are read from the database at scrape time, on the small pool (after startup creates it).
    metrics.registry.register(AlertCollector(lambda: app.state.light_pool.connection()))
    metrics.registry.register(IngestCollector(lambda: app.state.light_pool.connection()))
    metrics.registry.register(GatewayCollector(lambda: app.state.light_pool.connection()))
    # The dashboard's sign-in form is throttled like /v1 (same limits, its own count: the guard keeps its own).
    app.state.login_throttle = FailedAuthThrottle(limit=settings.api.auth_fail_limit,
                                                  window_s=settings.api.auth_fail_window_s,
                                                  max_clients=settings.api.auth_fail_clients)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Added last, so outermost: a refused request costs neither the metrics middleware nor a byte of its body.
    app.add_middleware(RequestGuard, settings=settings.api, metrics=metrics)
    install_error_handlers(app)
    install_offline_docs(app)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the database answers and is migrated",
             responses={503: {"model": ErrorBody, "description": "Not ready"}})
    def readyz() -> Response:
        latest = max(m.version for m in list_migrations())
        try:
            with app.state.pool.connection(timeout=5) as conn:
                applied = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        except (StoreError, Exception) as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"error": {"status": 503, "code": "not_ready", "message": f"database: {exc}",
                                           "details": []}}, status_code=503)
        if applied < latest:
            return JSONResponse({"error": {"status": 503, "code": "not_ready", "details": [],
                                           "message": f"database at migration {applied}, code needs {latest}"}},
                                status_code=503)
        return JSONResponse({"status": "ready", "migration": applied})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    for module in (experience, measures, earned_growth, touchpoint_survey, pricing, registry, ingest, dead_letters,
                   imports, credentials, alerts):
        # Routers carry their full "/v1/..." prefix, so route templates (metrics labels) are the real paths.
        app.include_router(module.router, responses=_ERRORS)
    app.include_router(dashboard.router)
    return app

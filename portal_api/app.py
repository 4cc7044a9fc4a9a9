"""The portal application: FastAPI routes for three audiences, the web portals, background jobs."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from . import leads, problems, webhooks
from .access import PortalState, RateLimiter
from .routes import common, dealer, feed, insurer, me, org
from .settings import PortalSettings

log = logging.getLogger(__name__)
# Every API route lives in one of these (the authorisation matrix test walks them).
API_ROUTERS = tuple(m.router for m in (common, dealer, insurer, me, feed, org))
STATIC_DIR = Path(__file__).parent / "static"

DESCRIPTION = """
VINsight's portal API for dealers, insurers and the driver's app.

* **Authentication**: people get a bearer token from `POST /v1/auth/token` (OAuth2 password flow);
  servers send an organisation API key as `X-API-Key`.
* **Consent**: every read is limited to vehicles whose owner granted the caller's organisation the
  scope the endpoint needs (`vehicle_health`, `service_contact`, `driving_score`, `mileage`,
  `trip_summary`, `location_history`), right now. Anything else is reported as not found.
* **Audit**: each read of personal data is logged; owners see who read what at `GET /v1/me/access-log`.
* **Conventions**: cursor pagination (`cursor` = the previous page's `next_cursor`), time filters
  `since`/`until` (ISO 8601), errors as RFC 9457 `application/problem+json`, per-client rate limits
  (429 with `Retry-After`), geometry as GeoJSON.
"""


class BackgroundJobs:
    """Lead generation, visit detection and webhook delivery every ``jobs_interval_s`` in one daemon thread."""

    def __init__(self, settings: PortalSettings, pool: ConnectionPool) -> None:
        self.settings, self.pool = settings, pool
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="portal-jobs", daemon=True)

    def run_once(self) -> dict[str, Any]:
        s = self.settings
        rules = leads.LeadRules(trade_in_km=s.trade_in_km, trade_in_age_years=s.trade_in_age_years)
        with self.pool.connection() as conn:
            created = leads.generate_all(conn, rules)
            visited = leads.close_visited(conn)
        with self.pool.connection() as conn:
            delivered = webhooks.deliver_due(conn, timeout_s=s.webhook_timeout_s, max_attempts=s.webhook_max_attempts,
                                             backoff_s=s.webhook_backoff_s)
        return {"leads_created": created, "leads_visited": visited, "webhooks": delivered}

    def _loop(self) -> None:
        while not self.stop.wait(self.settings.jobs_interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("background job failed; retrying next interval")


class SecurityHeaders:
    """Plain ASGI middleware (cheaper than ``@app.middleware``): CSP for the web portals, no caching
    of personal data, no MIME sniffing, no referrer."""

    def __init__(self, app: Any, csp: str) -> None:
        self.app = app
        self.csp = csp.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if not path.startswith("/api/docs"):  # Swagger UI loads its assets from a CDN
            extra.append((b"content-security-policy", self.csp))
        if path.startswith("/v1/"):
            extra.append((b"cache-control", b"no-store"))  # personal data stays out of caches

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in extra if h[0] not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _configure_connection(conn: psycopg.Connection) -> None:
    """jsonb columns (score explanations, health documents) parse with orjson: several times
    quicker than the standard library on the pages that return them."""
    set_json_loads(orjson.loads, conn)


def create_app(settings: PortalSettings | None = None, *, start_jobs: bool | None = None) -> FastAPI:
    settings = settings or PortalSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(settings.db_url, min_size=settings.pool_min, max_size=settings.pool_max, open=True,
                              kwargs={"application_name": "vinsight-portal", "options": "-c TimeZone=UTC"},
                              configure=_configure_connection)
        app.state.portal = PortalState(settings, pool, RateLimiter(settings.rate_limit_per_min),
                                       RateLimiter(settings.login_rate_limit_per_min))
        jobs = BackgroundJobs(settings, pool)
        app.state.jobs = jobs
        if settings.background_jobs if start_jobs is None else start_jobs:
            jobs.thread.start()
        # Everything built at start-up (routes, schemas, modules) lives as long as the process: keep
        # it out of the cyclic collector's scans, and collect the young generation less often. A
        # request allocates thousands of short-lived objects; the default thresholds ran the
        # collector several times per request.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            jobs.stop.set()
            pool.close()

    app = FastAPI(title="VINsight portal API", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    problems.install(app)

    tiles = settings.map_tiles_url.split("/{", 1)[0] if settings.map_tiles_url else ""
    csp = ("default-src 'self'; img-src 'self' data:" + (f" {tiles}" if tiles else "")
           + "; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")

    app.add_middleware(SecurityHeaders, csp=csp)
    for router in API_ROUTERS:
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        st: PortalState = app.state.portal
        with st.pool.connection() as conn:
            conn.execute("SELECT 1")
        return {"ok": True}

    @app.get("/config.json", include_in_schema=False)
    def web_config() -> dict[str, Any]:
        return {"map_tiles_url": settings.map_tiles_url}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = problems.PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app

"""What the web service tells its operator: a request id and an access line per request,
Prometheus metrics (served on a listener of their own: `metrics_app()`), and OpenTelemetry
traces when the environment asks for them."""

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Histogram, make_asgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import database
from .connections import sqlstate
from .logs import request_id

# `<package>.access`, the name log queries filter on (the package's, not the machinery's).
access_log = logging.getLogger(f"{__name__.partition('.')[0]}.access")

# A client's X-Request-ID is kept when it is 1 to 128 printable ASCII characters, no spaces
# (safe in a log line and a header); any other gets a new id.
SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# Requests no route matched (404s of any path) share one label: raw paths would make a new
# time series per path a client tries. So do methods outside this list: every one llhttp
# knows (PROPFIND, MKCALENDAR, PURGE, ...) would be a label value of its own.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# OpenTelemetry's standard variables that name where traces go; OTEL_SDK_DISABLED=true wins.
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Seconds from a request's arrival to its answer, by method and route template",
    ["method", "route"],
)
DATABASE_ERRORS = Counter(
    "database_errors",
    "Database errors by SQLSTATE class (its first two characters; 'none' without a SQLSTATE)",
    ["sqlstate_class"],
)


POOL_GAUGES = [
    ("size", "Connections the pool keeps open (DATABASE_POOL_SIZE)", "size"),
    ("checked_out", "Connections in use now", "checkedout"),
    ("overflow", "Connections open beyond the pool size now", "overflow"),
]


class PoolCollector(Collector):
    """The app's connection pool, read at each scrape: nothing is counted between scrapes
    (and nothing is there before the engine is built, on first use)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # What registering asks for (else it collects): the names, without the engine.
        for name, documentation, _ in POOL_GAUGES:
            yield GaugeMetricFamily(f"database_pool_{name}", documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if database.engine is None:
            return
        pool = database.engine.pool
        for name, documentation, method in POOL_GAUGES:
            if (read := getattr(pool, method, None)) is not None:  # NullPool has none
                yield GaugeMetricFamily(f"database_pool_{name}", documentation, max(0, read()))


def count_database_error(context: ExceptionContext) -> None:
    code = sqlstate(context.sqlalchemy_exception) if context.sqlalchemy_exception else ""
    DATABASE_ERRORS.labels(code[:2] or "none").inc()


REGISTRY.register(PoolCollector())
# On every engine (the app's is built later, on first use), hence on Engine itself.
event.listen(Engine, "handle_error", count_database_error)


class Observe:
    """ASGI middleware: each request gets an id, the client's `X-Request-ID` when sane, else a
    new one, sent back in `X-Request-ID` and bound to every log line written while serving it;
    then one access line (method, route template, status, duration) and, with metrics on, its
    count and latency."""

    def __init__(self, app: ASGIApp, metrics: bool) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        identifier = given.decode() if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        header = (b"x-request-id", identifier.encode())
        status = 0  # no answer sent (the client left first)

        async def with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        method, token, started = scope["method"], request_id.set(identifier), time.perf_counter()
        try:
            await self.app(scope, receive, with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", UNMATCHED)
            duration = round(seconds * 1000, 1)
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                route,
                status,
                duration,
                extra={"method": method, "route": route, "status": status, "duration_ms": duration},
            )
            if self.metrics:
                known = method if method in METHODS else OTHER_METHOD
                REQUESTS.labels(known, route, str(status)).inc()
                LATENCY.labels(known, route).observe(seconds)
            request_id.reset(token)


def metrics_app() -> ASGIApp:
    """Prometheus metrics (prometheus-client's own exposition) at `/metrics`, for GET and HEAD;
    405 for any other method, 404 for any other path. For a listener of its own (`serve`'s
    METRICS_PORT), never the public one."""
    exposition = make_asgi_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: nothing to start
            return
        if scope["path"] != "/metrics":
            response = JSONResponse({"detail": "not found"}, status_code=404)
        elif scope["method"] not in ("GET", "HEAD"):
            allow = {"Allow": "GET, HEAD"}
            response = JSONResponse({"detail": "method not allowed"}, 405, headers=allow)
        else:
            await exposition(scope, receive, send)
            return
        await response(scope, receive, send)

    return app


def tracing_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """OpenTelemetry's variables name an OTLP endpoint, and OTEL_SDK_DISABLED is not true."""
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return not disabled and any(environ.get(name) for name in OTLP_ENDPOINTS)

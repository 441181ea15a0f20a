"""`python -m <package>.core.serve`: the web service in production, draining on SIGTERM.

uvicorn alone stops listening the moment SIGTERM arrives, while the load balancer still
believes the instance ready and sends it new requests, which are refused. Here SIGTERM
first turns `/ready` to 503 and keeps serving for SHUTDOWN_DRAIN_SECONDS (long enough for
the probes to notice), then uvicorn stops listening and gives the requests in flight
SHUTDOWN_GRACE_SECONDS to finish; the lifespan then disposes of the pool. A second SIGTERM,
or Ctrl+C, skips the drain. The two together stay below the orchestrator's grace period
(Kubernetes' terminationGracePeriodSeconds, compose's stop_grace_period): README.

Prometheus metrics are served on a listener of their own, METRICS_PORT (9464), at
`/metrics`: never on the public port, where any client could read and inflate them.

One process: run more replicas rather than workers, each with its own drain. At startup it
checks the connection budget of WEB_CONCURRENCY processes (default 1; set it to all the
processes that share the server, replicas x workers; with DATABASE_CONNECTION_BUDGET each
process's pool is its share) and warns once when it does not hold.
"""

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings, get_settings, invalid_settings
from ..web import create_app
from .budget import connection_budget
from .client_limits import limited_protocol
from .database import create_engine
from .logs import logging_config
from .observability import metrics_app

logger = logging.getLogger("uvicorn.error")  # configured by uvicorn: one log for all


class Draining:
    """The app, but `/ready` answers 503 once `draining` is set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining and scope["type"] == "http" and scope["path"] == "/ready":
            response = JSONResponse({"detail": "shutting down"}, status_code=503)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Listeners:
    """The app, and the metrics for requests that came in on the metrics port."""

    def __init__(self, app: ASGIApp, metrics_port: int) -> None:
        self.app = app
        self.metrics = metrics_app()
        self.metrics_port = metrics_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or (None, None)
        if scope["type"] == "http" and server[1] == self.metrics_port:
            await self.metrics(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host` (IPv4, or IPv6 when it holds a colon) and `port`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


class DrainingServer(uvicorn.Server):
    """uvicorn's server; SIGTERM sets `app.draining` and stops listening `drain` s later."""

    def __init__(self, config: uvicorn.Config, app: Draining, drain: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain = drain
        self.drain_ends: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_ends is None and self.drain > 0:
            self.app.draining = True
            self.drain_ends = time.monotonic() + self.drain
            logger.info("SIGTERM: /ready answers 503; draining for %g s", self.drain)
            return
        super().handle_exit(sig, frame)  # Ctrl+C, a second SIGTERM: as uvicorn

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started or not sockets:
            return
        # uvicorn says where it serves only when it made the sockets itself: here, ours.
        public, *metrics = [sock.getsockname()[:2] for sock in sockets or ()]
        logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", *public)
        for address in metrics:
            logger.info("Metrics on http://%s:%d/metrics", *address)

    async def on_tick(self, counter: int) -> bool:
        # Runs every 0.1 s in uvicorn's main loop: end the drain there, not in the handler.
        if self.drain_ends is not None and time.monotonic() >= self.drain_ends:
            self.drain_ends = None
            super().handle_exit(signal.SIGTERM, None)  # now uvicorn stops listening
        return await super().on_tick(counter)


def check_budget(settings: Settings, processes: int) -> None:
    """Warn once when `processes` pools may open more connections than the server allows."""
    if settings.database_pgbouncer:
        return  # PgBouncer's own pool size is the budget there
    engine = create_engine(settings, poolclass=NullPool)

    async def measure() -> None:
        try:
            async with asyncio.timeout(settings.ready_timeout):
                budget = await connection_budget(engine, settings, processes)
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            logger.warning("connection budget not checked: %s", type(error).__name__)
            return
        finally:
            await engine.dispose()
        if not budget.holds:
            logger.warning(budget.warning())

    asyncio.run(measure())


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.serve", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000)")
    options = parser.parse_args(arguments)
    try:
        settings = get_settings()
    except ValidationError as error:
        print(invalid_settings(error), file=sys.stderr)
        return 2
    app = Draining(create_app(settings))
    metrics = settings.metrics_enabled and settings.metrics_port > 0
    config = uvicorn.Config(
        Listeners(app, settings.metrics_port) if metrics else app,
        host=options.host,
        port=options.port,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # REQUEST_TIMEOUT, REQUEST_MAX_HEADER_BYTES, one pipelined request at a time.
        http=limited_protocol(settings.request_timeout, settings.request_max_header_bytes),
        # Behind the orchestrator's proxy: trust X-Forwarded-* from FORWARDED_ALLOW_IPS.
        proxy_headers=True,
        # The project's one log format (LOG_FORMAT, LOG_LEVEL) for uvicorn's lines too.
        log_config=logging_config(settings),
    )
    ports = [options.port, settings.metrics_port] if metrics else [options.port]
    if len(set(ports)) < len(ports):
        print(f"error: --port {options.port} is METRICS_PORT too: choose another", file=sys.stderr)
        return 2
    try:
        sockets = [listen(options.host, port) for port in ports]
    except OSError as error:
        print(f"error: cannot listen on {options.host}, port {ports}: {error}", file=sys.stderr)
        return 1
    check_budget(settings, settings.web_concurrency)
    # uvicorn raises Ctrl+C's SIGINT again once it has stopped: not an error here.
    with contextlib.suppress(KeyboardInterrupt):
        DrainingServer(config, app, settings.shutdown_drain_seconds).run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())

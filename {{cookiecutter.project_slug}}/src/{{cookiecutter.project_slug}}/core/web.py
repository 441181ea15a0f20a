"""The web service's machinery: the session dependencies (`SessionDep`, `ReadSessionDep`),
error answers a client can act on, HEAD, the body limits, request ids, access lines, metrics
and traces (`install()`), the lifespan, and the readiness check. The app itself, its routes and
their bodies are the project's: web.py, routes.py, schemas.py."""

import asyncio
import gc
import logging
import reprlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import Settings
from . import database, migrations
from .client_limits import BodyLimit
from .connections import is_transient, sqlstate
from .observability import Observe, tracing_configured

logger = logging.getLogger(__name__)

# Whether the database refuses writes now: a standby, or default_transaction_read_only (a
# primary fenced during a failover). One round trip, like SELECT 1.
READ_ONLY = text("SELECT current_setting('transaction_read_only') = 'on'")
# The methods a route may take, for 405's Allow (HEAD goes with GET).
ROUTE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A 503 for what a retry may outlast: a second from now.
RETRY_AFTER = {"Retry-After": "1"}
# A 422 shows at most this many errors, and an excerpt of about 40 characters of each value.
MAX_ERRORS = 10
EXCERPT = reprlib.Repr()
EXCERPT.maxstring = EXCERPT.maxother = 40


async def session_per_request() -> AsyncIterator[AsyncSession]:
    """One `get_session()` per request: committed when the handler returns, rolled back if it
    raises (`HTTPException` included), `TransactionAbortedError` when it swallowed a failure."""
    async with database.get_session() as session:
        yield session


# A route's session: `session: SessionDep`. scope="function": FastAPI runs this dependency's
# exit (the COMMIT) when the handler returns, *before* it sends the response. With the
# default scope ("request") the exit runs after the response went out, so a failed COMMIT
# would already have answered 2xx for data that was never stored. Here a failing COMMIT
# raises into the error handlers below: a 5xx.
SessionDep = Annotated[AsyncSession, Depends(session_per_request, scope="function")]


async def read_session_per_request() -> AsyncIterator[AsyncSession]:
    """One `get_read_session()` per request: read-only, on the replica when there is one."""
    async with database.get_read_session() as session:
        yield session


# For GET routes. A replica lags: a route that must see the request's own earlier writes
# (read-your-writes) takes `SessionDep`, which reads on the primary.
ReadSessionDep = Annotated[AsyncSession, Depends(read_session_per_request, scope="function")]


def problem(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def database_error(request: Request, error: Exception) -> JSONResponse:
    """Map a database failure to an answer the client can act on; never SQL, parameters,
    the URL or a traceback (`str(error)` holds the statement and its parameters)."""
    code = sqlstate(error)
    reason = f"{type(error).__name__} (SQLSTATE {code})" if code else type(error).__name__
    line = ("%s %s: %s", request.method, request.url.path, reason)
    if isinstance(error, IntegrityError):
        logger.warning(*line, extra={"sqlstate": code})
        return problem(status.HTTP_409_CONFLICT, "conflicts with stored data")
    if isinstance(error, SQLAlchemyError) and is_transient(error):
        logger.warning(*line, extra={"sqlstate": code})
        return problem(503, "database unavailable, retry", RETRY_AFTER)
    logger.error(*line, extra={"sqlstate": code})  # a bug: worth an alert
    return problem(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    """A 422 naming each field and its problem, with a short excerpt of the value at most.

    FastAPI's own handler echoes every rejected value whole: a 10 MB name came back as a
    10 MB answer, and a value JSON cannot carry (NaN, a lone surrogate) made it fail (500).
    """
    assert isinstance(error, RequestValidationError)
    details = [
        {
            "loc": [part if isinstance(part, int) else printable(str(part)) for part in e["loc"]],
            "msg": printable(e["msg"]),
            "type": e["type"],
            "input": printable(EXCERPT.repr(e.get("input"))),
        }
        for e in error.errors()[:MAX_ERRORS]
    ]
    return JSONResponse({"detail": details}, status_code=422)


def printable(text: str) -> str:
    """`text` with what UTF-8 cannot carry (lone surrogates) as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def method_not_allowed(request: Request, error: Exception) -> JSONResponse:
    """405 with the methods of every route on the path in `Allow`: Starlette names only the
    first route's (FastAPI has one route per method). Each method is tried against the app's
    routes as the router would, included routers and all."""
    methods = {
        method
        for method in ROUTE_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    }
    if "GET" in methods:
        methods.add("HEAD")  # answered as GET without the body: see HeadAsGet
    allow = {"Allow": ", ".join(sorted(methods))}
    return problem(status.HTTP_405_METHOD_NOT_ALLOWED, "method not allowed", allow)


class HeadAsGet:
    """ASGI middleware: HEAD runs as GET and is answered with GET's headers and no body (HTTP
    requires HEAD wherever GET is served; FastAPI routes accept only the methods they list).

    The app inside gets a copy of the scope saying GET; the server keeps its own, saying HEAD,
    so it expects no body after GET's Content-Length (rewritten in place, uvicorn waited for
    the body, logged an error and dropped the connection).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, headers_only)
        finally:
            # The route it reached, for the access line and metrics around (Observe).
            if "route" in as_get:
                scope["route"] = as_get["route"]


class CatchAll:
    """ASGI middleware: any exception no handler took becomes a JSON 500, logged with its
    traceback. Starlette's own catch-all re-raises after answering, which made the server
    drop the connection: the client's next request on it failed too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("%s %s failed", scope["method"], scope["path"])
            if started:  # too late for another answer: the server closes the connection
                raise
            await problem(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")(
                scope, receive, send
            )


class Problem(BaseModel):
    """Every error answer: one line a client can act on, never internals."""

    detail: str


# The error answers every route may give, for the OpenAPI document: FastAPI(responses=...).
PROBLEMS: dict[int | str, dict[str, object]] = {
    500: {"model": Problem, "description": "Internal error"},
    503: {"model": Problem, "description": "Database unavailable"},
}


def lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the engine built (and migrated, with MIGRATE_ON_STARTUP) and the
    heap settled before serving, its pooled connections closed after."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        engine = database.get_engine()
        if (provider := getattr(app.state, "tracer_provider", None)) is not None:
            from .tracing import instrument_engine  # only when install() traced the app

            instrument_engine(engine, provider)
        if settings.migrate_on_startup:  # the deploy step's migration, as the schema's owner
            logger.info(await migrations.migrate(settings))
        settle_the_heap()
        try:
            yield
        finally:
            await database.dispose()  # close pooled connections instead of dropping them

    return running


# Whether settle_the_heap() ran in this process (apps and their lifespans may be many).
heap_settled = False


def settle_the_heap() -> None:
    """Move what start-up built (modules, the app, the engine) out of the garbage collector's
    reach, once per process: its full collections then scan only what requests leave behind."""
    global heap_settled
    if not heap_settled:
        gc.collect()
        gc.freeze()
        heap_settled = True


def install(app: FastAPI, settings: Settings) -> None:
    """Give `app` the machinery: error answers, HEAD, the body limits, request ids and access
    lines, metrics, and traces when OpenTelemetry's variables ask for them."""
    app.add_exception_handler(SQLAlchemyError, database_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, method_not_allowed)
    # Outermost last: a HEAD is a GET to everything inside; a failure anywhere is a 500.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.request_max_bytes,
        max_json_values=settings.request_max_json_values,
    )
    app.add_middleware(CatchAll)
    app.add_middleware(HeadAsGet)
    # Outside all: the request id, access line and metrics see every answer, HEAD as HEAD.
    app.add_middleware(Observe, metrics=settings.metrics_enabled)
    if tracing_configured():
        try:
            from .tracing import instrument
        except ImportError as error:
            logger.warning("OTEL_* is set, but OpenTelemetry is not installed: %s", error)
        else:
            instrument(app)


async def check_ready(settings: Settings) -> None:
    """Raise a 503 unless the database answers within READY_TIMEOUT and takes writes. A
    read-only primary (a failover in progress, a fenced server) is not ready."""
    try:
        async with asyncio.timeout(settings.ready_timeout), database.get_session() as session:
            read_only = await session.scalar(READ_ONLY)
    except Exception as error:  # whatever keeps the database from answering: not ready
        logger.warning("not ready: %s", type(error).__name__)
        raise HTTPException(503, "database unavailable", RETRY_AFTER) from None
    if read_only:
        logger.warning("not ready: the database is read-only")
        raise HTTPException(503, "database read-only", RETRY_AFTER)

"""The HTTP service: `uvicorn <package>.web:app`, or `create_app()` for another configuration."""

import asyncio
import logging
import reprlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import database, migrations
from .client_limits import BodyLimit, limited_protocol
from .connections import is_transient, sqlstate
from .logs import configure_logging
from .models import Tutorial
from .observability import Observe, tracing_configured
from .repository import find_tutorial, insert_tutorial
from .schemas import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    Problem,
    TutorialCreate,
    TutorialId,
    TutorialPage,
    TutorialRead,
)
from .settings import Settings

logger = logging.getLogger(__name__)

# Whether the database refuses writes now: a standby, or default_transaction_read_only (a
# primary fenced during a failover). One round trip, like SELECT 1.
READ_ONLY = text("SELECT current_setting('transaction_read_only') = 'on'")
# A 503 for what a retry may outlast: a second from now.
RETRY_AFTER = {"Retry-After": "1"}
# A 422 shows at most this many errors, and an excerpt of about 40 characters of each value.
MAX_ERRORS = 10
EXCERPT = reprlib.Repr()
EXCERPT.maxstring = EXCERPT.maxother = 40


class WebSettings(Settings):
    """The data layer's settings, plus the service's own (environment variables, `.env`)."""

    # Run `alembic upgrade head` in the lifespan, before serving. Replicas that start
    # together queue on the migration's advisory lock: one migrates, all start.
    migrate_on_startup: bool = False
    # Seconds `/ready` waits for `SELECT 1` before answering 503.
    ready_timeout: float = 2.0
    # Bytes a request body may have: a larger one is answered 413 without being read whole.
    request_max_bytes: int = 1024 * 1024
    # Values a JSON body may have (counted by its `, : [ {`): more is 413, before parsing.
    request_max_json_values: int = 1000
    # Bytes of request line and header fields a request may have: more is 431 (with
    # `--http <package>.web:HTTPProtocol`, as `serve` runs).
    request_max_header_bytes: int = 32 * 1024
    # Seconds a client has to send a whole request, from its connection opening or its last
    # response, and to start reading an answer (with `--http <package>.web:HTTPProtocol`):
    # a stalled one is disconnected.
    request_timeout: float = 20.0
    # Prometheus metrics, counted and served by `serve` on METRICS_PORT (off: nothing counted).
    metrics_enabled: bool = True


async def session_per_request() -> AsyncIterator[AsyncSession]:
    """One `get_session()` per request: committed when the handler returns, rolled back if it
    raises (`HTTPException` included), `TransactionAbortedError` when it swallowed a failure."""
    async with database.get_session() as session:
        yield session


# scope="function": FastAPI runs this dependency's exit (the COMMIT) when the handler
# returns, *before* it sends the response. With the default scope ("request") the exit runs
# after the response went out, so a failed COMMIT would already have answered 2xx for data
# that was never stored. Here a failing COMMIT raises into the error handlers below: a 5xx.
Session = Annotated[AsyncSession, Depends(session_per_request, scope="function")]


async def read_session_per_request() -> AsyncIterator[AsyncSession]:
    """One `get_read_session()` per request: read-only, on the replica when there is one."""
    async with database.get_read_session() as session:
        yield session


# For GET routes. A replica lags: a route that must see the request's own earlier writes
# (read-your-writes) takes `Session`, which reads on the primary.
ReadSession = Annotated[AsyncSession, Depends(read_session_per_request, scope="function")]


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
    first route's (FastAPI has one route per method)."""
    methods = {
        method
        for route in request.app.routes
        if route.matches(request.scope)[0] != Match.NONE
        for method in getattr(route, "methods", None) or ()
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


def create_app(settings: WebSettings | None = None) -> FastAPI:
    """The service, configured by `settings` (default: the environment and `.env`)."""
    settings = settings or WebSettings()  # type: ignore[call-arg]  # from the environment

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_startup:
            await migrations.upgrade(database.engine)
        try:
            yield
        finally:
            await database.dispose()  # close pooled connections instead of dropping them

    app = FastAPI(
        title="Tutorials",
        lifespan=lifespan,
        responses={
            500: {"model": Problem, "description": "Internal error"},
            503: {"model": Problem, "description": "Database unavailable"},
        },
    )
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
            instrument(app, database.engine)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (asks no database): for liveness probes."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": Problem}})
    async def ready() -> dict[str, str]:
        """The database answers within `ready_timeout` and takes writes: for readiness
        probes. A read-only primary (a failover in progress, a fenced server) is not ready."""
        try:
            async with asyncio.timeout(settings.ready_timeout), database.get_session() as session:
                read_only = await session.scalar(READ_ONLY)
        except Exception as error:  # whatever keeps the database from answering: not ready
            logger.warning("not ready: %s", type(error).__name__)
            raise HTTPException(503, "database unavailable", RETRY_AFTER) from None
        if read_only:
            logger.warning("not ready: the database is read-only")
            raise HTTPException(503, "database read-only", RETRY_AFTER)
        return {"status": "ready"}

    @app.post(
        "/tutorials",
        status_code=status.HTTP_201_CREATED,
        response_model=TutorialRead,
        responses={
            400: {"model": Problem, "description": "The body is not JSON in UTF-8"},
            409: {"model": Problem},
            413: {"model": Problem, "description": "The body is over REQUEST_MAX_BYTES"},
        },
    )
    async def create_tutorial(
        body: TutorialCreate, session: Session, response: Response
    ) -> TutorialRead:
        # A hot route: the Core fast path, no ORM object to build (docs/design.md, template).
        tutorial_id = await insert_tutorial(session, body.name)
        response.headers["Location"] = app.url_path_for(
            "read_tutorial", tutorial_id=str(tutorial_id)
        )
        return TutorialRead(tutorial_id=tutorial_id, name=body.name)

    @app.get(
        "/tutorials/{tutorial_id}",
        response_model=TutorialRead,
        responses={404: {"model": Problem}},
    )
    async def read_tutorial(tutorial_id: TutorialId, session: ReadSession) -> TutorialRead:
        row = await find_tutorial(session, tutorial_id)  # a hot route too: Core
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tutorial")
        return TutorialRead(tutorial_id=row.tutorial_id, name=row.name)

    @app.get("/tutorials", response_model=TutorialPage)
    async def list_tutorials(
        session: ReadSession,
        after: Annotated[TutorialId | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    ) -> TutorialPage:
        """Keyset pagination on the primary key: a page stays correct while rows are added
        or deleted before it (an OFFSET would skip or repeat rows), and page 1,000 costs an
        index range scan like page 1 (an OFFSET reads and discards every row before it)."""
        query = select(Tutorial).order_by(Tutorial.tutorial_id).limit(limit + 1)
        if after is not None:
            query = query.where(Tutorial.tutorial_id > after)
        rows = list(await session.scalars(query))
        items = [TutorialRead.model_validate(row) for row in rows[:limit]]
        more = len(rows) > limit
        return TutorialPage(items=items, next_after=items[-1].tutorial_id if more else None)

    @app.delete(
        "/tutorials/{tutorial_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={404: {"model": Problem}},
    )
    async def delete_tutorial(tutorial_id: TutorialId, session: Session) -> None:
        deleted = await session.scalar(
            delete(Tutorial)
            .where(Tutorial.tutorial_id == tutorial_id)
            .returning(Tutorial.tutorial_id)
        )
        if deleted is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tutorial")

    return app


settings = WebSettings()  # type: ignore[call-arg]  # from the environment
# Here, not in create_app(): `uvicorn <package>.web:app` logs in our format from its first
# request on, while the apps that tests create leave the test runner's logging alone.
configure_logging(settings)
app = create_app(settings)
# uvicorn's HTTP protocol with REQUEST_TIMEOUT and REQUEST_MAX_HEADER_BYTES:
# `uvicorn --http <package>.web:HTTPProtocol`.
HTTPProtocol = limited_protocol(settings.request_timeout, settings.request_max_header_bytes)

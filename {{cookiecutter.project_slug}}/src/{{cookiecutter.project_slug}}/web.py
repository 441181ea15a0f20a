"""The HTTP service: `uvicorn <package>.web:app`, or `create_app()` for another configuration."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from . import database, migrations
from .connections import sqlstate
from .models import Tutorial
from .repository import save_tutorial
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

# SQLSTATE classes and codes that mean "the database is not there right now, try again":
# connection exceptions, the server shutting down or starting up, and transactions that lost
# a race (serialization failure, deadlock) which a retry may win.
UNAVAILABLE_CLASSES = ("08", "57P")
RETRY_CODES = frozenset({"40001", "40P01"})


class WebSettings(Settings):
    """The data layer's settings, plus the service's own (environment variables, `.env`)."""

    # Run `alembic upgrade head` in the lifespan, before serving. Replicas that start
    # together queue on the migration's advisory lock: one migrates, all start.
    migrate_on_startup: bool = False
    # Seconds `/ready` waits for `SELECT 1` before answering 503.
    ready_timeout: float = 2.0


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


def problem(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def database_error(request: Request, error: Exception) -> JSONResponse:
    """Map a database failure to an answer the client can act on; never SQL, parameters,
    the URL or a traceback (`str(error)` holds the statement and its parameters)."""
    code = sqlstate(error)
    reason = f"{type(error).__name__} (SQLSTATE {code})" if code else type(error).__name__
    logger.warning("%s %s: %s", request.method, request.url.path, reason)
    if isinstance(error, IntegrityError):
        return problem(status.HTTP_409_CONFLICT, "conflicts with stored data")
    unavailable = (
        isinstance(error, OSError | PoolTimeoutError)
        or (isinstance(error, DBAPIError) and error.connection_invalidated)
        or code.startswith(UNAVAILABLE_CLASSES)
        or code in RETRY_CODES
    )
    if unavailable:
        return problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable, retry", {"Retry-After": "1"}
        )
    return problem(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """Any other exception: a JSON 500 (the server's log keeps the traceback)."""
    return problem(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


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
    app.add_exception_handler(OSError, database_error)
    app.add_exception_handler(Exception, unexpected_error)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (asks no database): for liveness probes."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": Problem}})
    async def ready() -> dict[str, str]:
        """The database answers `SELECT 1` within `ready_timeout`: for readiness probes."""
        try:
            async with asyncio.timeout(settings.ready_timeout), database.get_session() as session:
                await session.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            logger.warning("not ready: %s", type(error).__name__)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable"
            ) from None
        return {"status": "ready"}

    @app.post(
        "/tutorials",
        status_code=status.HTTP_201_CREATED,
        response_model=TutorialRead,
        responses={409: {"model": Problem}},
    )
    async def create_tutorial(
        body: TutorialCreate, session: Session, response: Response
    ) -> Tutorial:
        tutorial = await save_tutorial(session, body.name)
        response.headers["Location"] = app.url_path_for(
            "read_tutorial", tutorial_id=str(tutorial.tutorial_id)
        )
        return tutorial

    @app.get(
        "/tutorials/{tutorial_id}",
        response_model=TutorialRead,
        responses={404: {"model": Problem}},
    )
    async def read_tutorial(tutorial_id: TutorialId, session: Session) -> Tutorial:
        tutorial = await session.get(Tutorial, tutorial_id)
        if tutorial is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tutorial")
        return tutorial

    @app.get("/tutorials", response_model=TutorialPage)
    async def list_tutorials(
        session: Session,
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


app = create_app()

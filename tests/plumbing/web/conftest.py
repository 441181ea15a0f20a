"""The web plumbing tests' app: the project's, with routes that fail as a handler with a bug
would, and a `get_session()` on a database that is not there."""

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.core.web import ReadSessionDep, SessionDep
from {{ cookiecutter.project_slug }}.repository import save_tutorial
from {{ cookiecutter.project_slug }}.web import create_app

from ...test_web import client  # noqa: F401  (the fixture: its `app` is the one here)
from ..conftest import settings_for
from ..servers import free_port


def add_failing_routes(app: FastAPI) -> None:
    """Routes that write a tutorial, then fail: as a handler with a bug would; and POST
    /tutorials as a `get_session()` route, to compare with the service's own."""

    @app.post("/tutorials-in-a-session", status_code=201)
    async def save_in_a_session(session: SessionDep) -> None:
        await save_tutorial(session, "in a session")

    @app.post("/write-then-raise")
    async def write_then_raise(session: SessionDep) -> None:
        await save_tutorial(session, "written, then raised")
        raise RuntimeError("a bug after the write")

    @app.post("/write-then-refuse")
    async def write_then_refuse(session: SessionDep) -> None:
        await save_tutorial(session, "written, then refused")
        raise HTTPException(409, "refused after the write")

    @app.post("/write-then-fail-on-a-file")
    async def write_then_fail_on_a_file(session: SessionDep) -> None:
        await save_tutorial(session, "written, then failed on a file")
        open("/nonexistent/report.txt").close()  # noqa: ASYNC230

    @app.get("/write-in-a-read-session")
    async def write_in_a_read_session(session: ReadSessionDep) -> None:
        await save_tutorial(session, "written in a read session")

    @app.post("/write-then-swallow")
    async def write_then_swallow(session: SessionDep) -> None:
        await save_tutorial(session, "written, then swallowed")
        with contextlib.suppress(DBAPIError):  # the failed statement aborted the transaction
            await session.execute(text("SELECT 1 / 0"))


@pytest.fixture(scope="module")
async def app(engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    """The app from the factory, with the failing routes above, its lifespan running (one
    per module)."""
    app = create_app()
    add_failing_routes(app)
    async with LifespanManager(app):
        yield app


@pytest.fixture
def unreachable_database(bind_get_session: Callable[..., AsyncEngine]) -> None:
    """`get_session()` on an engine of the app's kind, on a port where no server listens."""
    url = database.get_engine().url.set(host="127.0.0.1", port=free_port())
    bind_get_session(settings_for(url), pool_timeout=2)

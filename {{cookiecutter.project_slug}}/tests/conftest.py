"""Fixtures: every test runs on a test database beside the one in .env, never on it, and
everything a test does there, commits included, is undone when it ends.

- Plain tests need no fixture: `get_session()` (and the `session` fixture) join a transaction
  that is rolled back after the test; what they "commit" is a savepoint inside it. It runs as
  the role that owns the schema (the migrations'), so a test may change the schema too; the
  app's own engine connects as the app's role, as in production.
- `get_read_session()` joins it too, read-only (see `ReadOnlySavepoint`).
- `@pytest.mark.commits` tests really commit (on their own connections: concurrency, server
  restarts, migrations); the tables are emptied after each.
- A test fails when anything logged an error it did not expect (`@pytest.mark.logs_errors`
  says it expects some): a server can answer as a test expects and still have failed.
"""

import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.core.migrations import migration_settings, upgrade
from {{ cookiecutter.project_slug }}.settings import get_settings

from .server_state import empty_tables, temporary_database, with_suffix

# .env's database (or DATABASE_URL's): its server hosts the test databases; it is never written.
DEVELOPMENT = get_settings()
DEVELOPMENT_URL = DEVELOPMENT.database_url_object
OWNER = migration_settings(DEVELOPMENT)  # the schema's owner: creates and migrates them


# `pytest -n auto` (pytest-xdist): each worker process has a test database of its own.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
TEST_DATABASE = with_suffix(DEVELOPMENT_URL.database or "", f"test_{WORKER}" if WORKER else "test")


@pytest.fixture(scope="session", autouse=True)
def on_the_test_database() -> None:
    """From here on the settings, the app's engine and every process a test starts name it."""
    for variable, settings in (("DATABASE_URL", DEVELOPMENT), ("DATABASE_MIGRATION_URL", OWNER)):
        url = settings.database_url_object.set(database=TEST_DATABASE)
        os.environ[variable] = url.render_as_string(hide_password=False)
    os.environ["DATABASE_READ_URL"] = ""  # .env's replica copies .env's database
    get_settings.cache_clear()


class ReadOnlySavepoint(Session):
    """get_read_session()'s session in a test: a savepoint of the test's transaction, read-only
    (PostgreSQL gives the outer transaction back its read-write mode when the savepoint ends)."""


@event.listens_for(ReadOnlySavepoint, "after_begin")
def read_only(session: Session, transaction: Any, connection: Any) -> None:
    connection.exec_driver_sql("SET TRANSACTION READ ONLY")


@pytest.fixture(scope="session")
async def owner_engine(on_the_test_database: None) -> AsyncIterator[AsyncEngine]:
    """An engine as the schema's owner on the test database: created, migrated, dropped after."""
    owner_engine = database.create_engine(migration_settings(get_settings()))
    if owner_engine.url.database != TEST_DATABASE:
        pytest.exit(f"refusing to test on {owner_engine.url.database!r}: not the test database")
    async with temporary_database(OWNER, TEST_DATABASE):
        await upgrade(owner_engine, app_role=DEVELOPMENT_URL.username)  # the app's rows
        yield owner_engine
        await owner_engine.dispose()


@pytest.fixture(scope="session")
async def engine(owner_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The app's own engine (its role: rows only), on the test database."""
    yield database.get_engine()
    await database.dispose()


@pytest.fixture(scope="session")
async def tests_engine(owner_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The tests' transactions' engine, the owner's: an app's lifespan disposing its own engine
    leaves a test's connection alone."""
    tests_engine = database.create_engine(migration_settings(get_settings()), pool_size=1)
    yield tests_engine
    await tests_engine.dispose()


@pytest.fixture(autouse=True)
async def isolated(
    request: pytest.FixtureRequest,
    engine: AsyncEngine,
    owner_engine: AsyncEngine,
    tests_engine: AsyncEngine,
) -> AsyncIterator[None]:
    """Run the test in a transaction rolled back afterwards (`commits` tests: empty tables)."""
    commits = request.node.get_closest_marker("commits") is not None
    checkouts: list[bool] = []  # a connection was taken from the app's pool during the test

    def record(*_: object) -> None:
        checkouts.append(True)

    factories = (database.session_factory, database.read_session_factory)
    configured = [dict(factory.kw) for factory in factories]
    if not commits:
        connection = await tests_engine.connect()
        await connection.begin()
        for factory, session_class in zip(factories, (Session, ReadOnlySavepoint), strict=True):
            factory.configure(
                bind=connection,
                join_transaction_mode="create_savepoint",
                sync_session_class=session_class,
            )
    event.listen(engine.sync_engine, "checkout", record)
    try:
        yield
    finally:
        event.remove(engine.sync_engine, "checkout", record)
        for factory, kw in zip(factories, configured, strict=True):
            factory.kw = kw  # as database.py made it (a test may have bound it elsewhere)
        if not commits:
            await connection.close()  # rolls the test's transaction back
        # Code that took its own connection from the app's engine may have committed for real.
        if commits or checkouts:
            await empty_tables(owner_engine)


@pytest.fixture(autouse=True)
def no_error_logged(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Nothing: after the test, fail it if an error was logged (unless `logs_errors`)."""
    yield
    if request.node.get_closest_marker("logs_errors") is None:
        records = caplog.get_records("setup") + caplog.get_records("call")
        errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
        assert errors == [], "logged errors the test did not expect"


@pytest.fixture
async def session() -> AsyncIterator[AsyncSession]:
    """A session like `get_session()`'s, in the test's transaction; `commit()` is undone too."""
    async with database.session_factory() as session:
        yield session


@pytest.fixture
async def empty_engine() -> AsyncIterator[AsyncEngine]:
    """An engine on a new, empty database of its own (for migration tests)."""
    async with temporary_database(OWNER, with_suffix(TEST_DATABASE, "migrations")) as url:
        engine = create_async_engine(url, poolclass=NullPool)
        yield engine
        await engine.dispose()

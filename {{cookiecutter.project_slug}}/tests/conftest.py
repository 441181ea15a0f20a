"""Fixtures: a test database beside the one in .env, migrated once; each test rolled back."""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.database import create_engine, session_factory
from {{ cookiecutter.project_slug }}.migrations import upgrade
from {{ cookiecutter.project_slug }}.settings import Settings, get_settings


def settings_for(url: URL, **overrides: Any) -> Settings:
    """The project's settings (.env and environment), pointed at another database."""
    return Settings(database_url=SecretStr(url.render_as_string(hide_password=False)), **overrides)


@asynccontextmanager
async def temporary_database(suffix: str) -> AsyncIterator[URL]:
    """Create an empty database named after the one in .env, and drop it afterwards."""
    url = get_settings().database_url_object
    # PostgreSQL cuts names at 63 bytes: shorten the base, never the suffix that makes it ours.
    base = (url.database or "").encode()[: 62 - len(suffix)].decode(errors="ignore")
    name = f"{base}_{suffix}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)
    async with admin.connect() as connection:
        await connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        await connection.execute(text(f"CREATE DATABASE {quoted}"))
    try:
        yield url.set(database=name)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        await admin.dispose()


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[AsyncEngine]:
    """The app's engine on the test database, migrated to head; `get_session()` uses it."""
    async with temporary_database("test") as url:
        engine = create_engine(settings_for(url))
        await upgrade(engine)
        session_factory.configure(bind=engine)
        yield engine
        await engine.dispose()


@pytest.fixture
async def empty_engine() -> AsyncIterator[AsyncEngine]:
    """An engine on a new, empty database of its own (for migration tests)."""
    async with temporary_database("migrations") as url:
        engine = create_async_engine(url, poolclass=NullPool)
        yield engine
        await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        await transaction.rollback()


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session on the test's connection: its commits are savepoints, all undone afterwards."""
    async with AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as session:
        yield session


@pytest.fixture
def isolated_get_session(engine: AsyncEngine, connection: AsyncConnection) -> Iterator[None]:
    """Make `get_session()` use the test's connection, so what it commits is undone afterwards."""
    session_factory.configure(bind=connection, join_transaction_mode="create_savepoint")
    yield
    session_factory.configure(bind=engine, join_transaction_mode="conditional_savepoint")


@pytest.fixture
def bind_get_session(engine: AsyncEngine) -> Iterator[Callable[[AsyncEngine], None]]:
    """A function that points `get_session()` at another engine until the test ends."""
    yield lambda other: session_factory.configure(bind=other)
    session_factory.configure(bind=engine)


@pytest.fixture
async def committed(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The engine, for tests that really commit; the tutorials table is emptied afterwards."""
    yield engine
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE tutorials RESTART IDENTITY"))

"""Fixtures: a test database beside the one in .env, migrated once; each test rolled back."""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.database import session_factory
from {{ cookiecutter.project_slug }}.migrations import upgrade
from {{ cookiecutter.project_slug }}.settings import get_settings


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
    """An engine on the test database, migrated to head; `get_session()` is bound to it."""
    async with temporary_database("test") as url:
        engine = create_async_engine(url)
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
async def committed(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The engine, for tests that really commit; the tutorials table is emptied afterwards."""
    yield engine
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE tutorials RESTART IDENTITY"))

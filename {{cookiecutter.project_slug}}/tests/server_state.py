"""The test server: databases made and dropped for the tests, and what they hold."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import URL, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.models import Base, Tutorial
from {{ cookiecutter.project_slug }}.settings import Settings


def with_suffix(name: str, suffix: str) -> str:
    """`name_suffix`, the name shortened so the whole fits PostgreSQL's 63 bytes."""
    return f"{name.encode()[: 62 - len(suffix.encode())].decode(errors='ignore')}_{suffix}"


@asynccontextmanager
async def temporary_database(server: Settings, name: str) -> AsyncIterator[URL]:
    """Create an empty database `name` on `server`'s, and drop it afterwards."""
    # Connected to `server`'s database only to run CREATE and DROP DATABASE, which write
    # nothing there; the app's engine options (TLS and the like) apply.
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)

    async def drop() -> None:
        # Not DROP ... WITH (FORCE): PostgreSQL refuses that to a non-superuser while an
        # autovacuum worker is in the database (seen in CI on 15). A plain DROP stops autovacuum
        # itself and waits up to 5 s for the sessions ended here (only ours: all we may end).
        async with admin.connect() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"
                    " AND usename = current_user AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            await connection.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))

    await drop()
    async with admin.connect() as connection:
        await connection.execute(text(f"CREATE DATABASE {quoted}"))
    try:
        yield server.database_url_object.set(database=name)
    finally:
        await drop()
        await admin.dispose()


async def empty_tables(engine: AsyncEngine) -> None:
    """Delete every row of every model's table (and restart their identities)."""
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


async def count_tutorials(bind: AsyncSession | AsyncConnection | AsyncEngine, prefix: str) -> int:
    """Tutorials whose name starts with `prefix`, as `bind` (or a fresh connection) sees them."""
    statement = select(func.count()).where(Tutorial.name.startswith(prefix))
    if isinstance(bind, AsyncSession | AsyncConnection):
        return (await bind.execute(statement)).scalar_one()
    async with bind.connect() as connection:
        return (await connection.execute(statement)).scalar_one()

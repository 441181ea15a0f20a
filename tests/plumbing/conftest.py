"""Fixtures of the plumbing tests, beside the project's own (tests/conftest.py): other
settings, the app's engine built for them, and servers of a module's own."""

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.settings import Settings

from .servers import running_server


def settings_for(url: URL, **overrides: Any) -> Settings:
    """The project's settings (.env and environment), pointed at another database, with no
    migration URL (the test database's) unless `overrides` give one."""
    overrides.setdefault("database_migration_url", None)
    return Settings(database_url=SecretStr(url.render_as_string(hide_password=False)), **overrides)


async def fail_inserts(session: AsyncSession, condition: str) -> None:
    """Make every INSERT into tutorials raise SQLSTATE `condition` (undone with the test's
    transaction)."""
    await session.execute(
        text(
            "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN RAISE EXCEPTION 'failed' USING ERRCODE = '{condition}'; END $$"
        )
    )
    await session.execute(
        text("CREATE TRIGGER fail BEFORE INSERT ON tutorials FOR EACH ROW EXECUTE FUNCTION fail()")
    )


async def idle_in_transaction(engine: AsyncEngine) -> int:
    """Backends of this database sitting in an open transaction (a leaked session)."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            )
        )
    return int(count or 0)


@pytest.fixture
async def bind_get_session() -> AsyncIterator[Callable[..., AsyncEngine]]:
    """A function that builds the app's engine for other settings (and engine options),
    points `get_session()` at it until the test ends, and disposes of it then."""
    engines: list[AsyncEngine] = []

    def bind(settings: Settings, **options: Any) -> AsyncEngine:
        engines.append(other := database.create_engine(settings, **options))
        database.session_factory.configure(bind=other)
        database.read_session_factory.configure(bind=other)
        return other

    yield bind
    for other in engines:  # the autouse `isolated` fixture binds the app's engine again
        await other.dispose()


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[Any, URL]]:
    """A PostgreSQL server of the module's own, to restart; skipped without server binaries."""
    with running_server("restart_tester", "restarts") as server_and_url:
        yield server_and_url

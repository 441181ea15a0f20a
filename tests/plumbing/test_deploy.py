"""Production: the migrate command, its lock timeout, application_name, the connection budget."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from {{ cookiecutter.project_slug }}.core.budget import connection_budget, pool_limits
from {{ cookiecutter.project_slug }}.core.connections import sqlstate
from {{ cookiecutter.project_slug }}.core.database import APPLICATION_NAME, create_engine
from {{ cookiecutter.project_slug }}.core.migrations import (
    LOCK_NOT_AVAILABLE,
    MIGRATION_LOCK_ID,
    migrate,
    migration_settings,
    upgrade,
)
from {{ cookiecutter.project_slug }}.settings import Settings

from .conftest import settings_for
from .servers import SMALL_SERVER, running_server
from .test_migration_lock import current_revisions, head, with_a_revision

# A revision as users write them: ALTER TABLE needs the table's strongest lock, which waits
# for every transaction that has so much as read the table.
ADD_A_COLUMN = '''"""add a note to tutorials"""

import sqlalchemy as sa
from alembic import op

revision = "a1te7ab1e000"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tutorials", sa.Column("note", sa.Text()))


def downgrade() -> None:
    op.drop_column("tutorials", "note")
'''


async def migrate_command(tmp_path: Path, **environment: str) -> tuple[int | None, str]:
    """`python -m <package>.core.migrations upgrade` from elsewhere than the project: its exit
    code and output."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "{{ cookiecutter.project_slug }}.core.migrations", "upgrade"),
        cwd=tmp_path,
        env={**os.environ, "DATABASE_MIGRATION_URL": "", **environment},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, output.decode()


def raw(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def test_the_migrate_command_upgrades_then_has_nothing_to_do(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    """The deploy step migrates an empty database; run again, it says there is nothing to do."""
    first = await migrate_command(tmp_path, DATABASE_URL=raw(empty_engine.url))
    assert first == (0, f"upgraded an empty database to head ({head()})\n")
    second = await migrate_command(tmp_path, DATABASE_URL=raw(empty_engine.url))
    assert second == (0, f"already at head ({head()}): nothing to do\n")
    assert await current_revisions(empty_engine) == [head()]


async def test_the_migrate_command_takes_the_migration_url(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    """DATABASE_MIGRATION_URL, when set, is the one migrated: DATABASE_URL (here a PgBouncer
    that does not exist; its role the migrations' own, so there is no role to grant) is not
    even tried."""
    code, output = await migrate_command(
        tmp_path,
        DATABASE_URL=raw(empty_engine.url.set(host="127.0.0.1", port=1, database="pooled")),
        DATABASE_PGBOUNCER="true",
        DATABASE_MIGRATION_URL=raw(empty_engine.url),
    )
    assert (code, output) == (0, f"upgraded an empty database to head ({head()})\n")
    assert await current_revisions(empty_engine) == [head()]


async def test_a_bad_migration_url_is_one_line_naming_it(tmp_path: Path) -> None:
    """A DATABASE_MIGRATION_URL that is no PostgreSQL URL: exit 2, one line naming it."""
    code, output = await migrate_command(tmp_path, DATABASE_MIGRATION_URL="mysql://u:pw@h/db")
    assert code == 2
    assert output.count("\n") == 1
    assert "DATABASE_MIGRATION_URL has the scheme 'mysql'" in output
    assert "pw" not in output


def test_the_migration_settings_leave_pgbouncer_mode_to_database_url() -> None:
    """`migration_settings()` is the migration URL without PgBouncer's workarounds, or, without
    one, DATABASE_URL as it is; and never the app's command timeout."""
    direct = URL.create("postgresql+asyncpg", "u", "pw", "db.internal", 5432, "app")
    pooled = settings_for(direct.set(port=6432), database_pgbouncer=True)
    unchanged = migration_settings(pooled)
    assert (unchanged.database_url_object.port, unchanged.database_pgbouncer) == (6432, True)
    assert unchanged.database_command_timeout == 60 + 10  # the migration's own, and a margin
    both = settings_for(
        direct.set(port=6432),
        database_pgbouncer=True,
        database_migration_url=SecretStr(raw(direct)),
    )
    migrating = migration_settings(both)
    assert migrating.database_url_object.port == 5432
    assert migrating.database_pgbouncer is False


async def test_replicas_at_head_do_not_wait_for_the_migration_lock(
    empty_engine: AsyncEngine,
) -> None:
    """At head, `migrate` answers at once, even while another process holds the lock."""
    await upgrade(empty_engine)
    async with empty_engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        done = await asyncio.wait_for(migrate(settings_for(empty_engine.url)), timeout=5)
        await holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
    assert done.startswith("already at head")


@pytest.fixture
def old_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The project's head, before ADD_A_COLUMN joins the migrations in a copy that
    `alembic_config()` uses."""
    before = head()
    with_a_revision(tmp_path, monkeypatch, "a1te7ab1e000_add_a_note.py", ADD_A_COLUMN)
    return before


async def reading_transaction(engine: AsyncEngine) -> AsyncConnection:
    """A connection in a transaction that read `tutorials` (and so holds a lock on it)."""
    connection = await engine.connect()
    await connection.execute(text("SELECT count(*) FROM tutorials"))
    return connection


async def test_a_migration_behind_a_long_transaction_gives_up_without_queueing_the_app(
    empty_engine: AsyncEngine, old_head: str
) -> None:
    """ALTER TABLE behind a long transaction waits lock_timeout, not longer, each of its
    tries; meanwhile the application's queries on the table go through; then it fails with
    the lock timeout, the database left at its revision."""
    await upgrade(empty_engine, old_head)
    settings = settings_for(
        empty_engine.url, database_migration_lock_timeout=0.5, database_migration_retries=1
    )
    holder = await reading_transaction(empty_engine)
    try:
        migrating = asyncio.create_task(migrate(settings))
        await asyncio.sleep(0.3)  # the ALTER TABLE now waits for the holder
        started = time.monotonic()
        async with empty_engine.connect() as application:
            await asyncio.wait_for(
                application.execute(text("SELECT count(*) FROM tutorials")), timeout=10
            )
        waited = time.monotonic() - started
        with pytest.raises(DBAPIError) as raised:
            await asyncio.wait_for(migrating, timeout=30)
    finally:
        await holder.close()
    assert waited < 1.5  # queued behind the ALTER TABLE for its lock_timeout at most
    assert sqlstate(raised.value) == LOCK_NOT_AVAILABLE
    assert await current_revisions(empty_engine) == [old_head]  # rolled back whole


async def test_a_migration_retries_until_the_long_transaction_ends(
    empty_engine: AsyncEngine, old_head: str
) -> None:
    """A lock timeout is retried: once the long transaction ends, the migration goes through."""
    await upgrade(empty_engine, old_head)
    settings = settings_for(
        empty_engine.url, database_migration_lock_timeout=0.3, database_migration_retries=3
    )
    holder = await reading_transaction(empty_engine)
    migrating = asyncio.create_task(migrate(settings))
    await asyncio.sleep(1)  # a try or two timed out meanwhile
    await holder.close()
    done = await asyncio.wait_for(migrating, timeout=30)
    assert done == f"upgraded {old_head} to head (a1te7ab1e000)"
    assert await current_revisions(empty_engine) == ["a1te7ab1e000"]


async def test_connections_carry_the_application_name(empty_engine: AsyncEngine) -> None:
    """pg_stat_activity shows the package's name, or the URL's `application_name`."""
    query = text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    names = []
    for url in (empty_engine.url, empty_engine.url.update_query_dict({"application_name": "x"})):
        engine = create_engine(settings_for(url))
        async with engine.connect() as connection:
            names.append(await connection.scalar(query))
        await engine.dispose()
    assert names == [APPLICATION_NAME, "x"]
    assert APPLICATION_NAME == "{{ cookiecutter.project_slug }}"


@pytest.fixture(scope="module")
def small_server() -> Iterator[URL]:
    """A server of our own allowing 20 connections, 3 of them for superusers."""
    with running_server("budget_tester", "budget", SMALL_SERVER) as (_, url):
        yield url


@pytest.mark.parametrize(
    ("pool_size", "max_overflow", "processes", "holds"),
    [(20, 10, 1, False), (5, 3, 2, True), (5, 3, 3, False)],
)
async def test_the_connection_budget(
    small_server: URL, pool_size: int, max_overflow: int, processes: int, holds: bool
) -> None:
    """processes x (pool + overflow) against max_connections less the reserved ones; over,
    a one-line warning with the numbers and the fix."""
    settings = settings_for(
        small_server, database_pool_size=pool_size, database_max_overflow=max_overflow
    )
    engine = create_engine(settings)
    try:
        budget = await connection_budget(engine, settings, processes)
    finally:
        await engine.dispose()
    assert (budget.available, budget.needed, budget.holds) == (
        17,
        processes * (pool_size + max_overflow),
        holds,
    )
    if not holds:
        warning = budget.warning()
        assert "\n" not in warning
        assert f"{processes} process(es) x {pool_size + max_overflow} connections" in warning
        assert "allows 17 (max_connections 20 - 3 reserved)" in warning
        assert f"fit {17 // processes} per process" in warning


def test_the_default_pool_keeps_every_connection_it_opens() -> None:
    """30 + 0: no overflow connection to close when it comes back, so no login per burst;
    three processes fit a default server's 97 connections."""
    defaults = Settings.model_construct()
    assert pool_limits(defaults) == (30, 0)
    assert 3 * sum(pool_limits(defaults)) <= 100 - 3


def test_a_connection_budget_is_shared_by_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_CONNECTION_BUDGET=90 for WEB_CONCURRENCY=4 processes: each pool holds 22 and
    never overflows; the engine is built with those limits."""
    monkeypatch.setenv("DATABASE_CONNECTION_BUDGET", "90")
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    settings = settings_for(URL.create("postgresql+asyncpg", host="db.example"))
    assert pool_limits(settings) == (22, 0)
    pool = create_engine(settings).pool
    assert (pool.size(), pool._max_overflow) == (22, 0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"DATABASE_CONNECTION_BUDGET": "40", "DATABASE_POOL_SIZE": "10"},
            "DATABASE_CONNECTION_BUDGET sizes the pool itself: unset DATABASE_POOL_SIZE",
        ),
        (
            {"DATABASE_CONNECTION_BUDGET": "7", "WEB_CONCURRENCY": "4"},
            "DATABASE_CONNECTION_BUDGET=7 leaves less than 2 connections to each of "
            "WEB_CONCURRENCY=4 processes",
        ),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY: Input should be greater than or equal to 1"),
    ],
    ids=["budget-and-pool-size", "under-two-per-process", "no-process"],
)
def test_a_pool_sizing_that_cannot_work_is_one_line(
    environment: dict[str, str], message: str
) -> None:
    """`python -m <package>` refuses it before connecting: one line naming the settings."""
    result = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.project_slug }}"],
        env={**os.environ, "DATABASE_MIGRATION_URL": "", **environment},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, len(result.stderr.splitlines())) == (2, 1), result.stderr
    assert message in result.stderr


async def test_the_budget_check_takes_the_budgets_share(small_server: URL) -> None:
    """With DATABASE_CONNECTION_BUDGET, the budget check counts each process's share."""
    settings = settings_for(small_server, database_connection_budget=17, web_concurrency=2)
    engine = create_engine(settings)
    try:
        budget = await connection_budget(engine, settings, settings.web_concurrency)
    finally:
        await engine.dispose()
    assert (budget.per_process, budget.needed, budget.holds) == (8, 16, True)

"""Migrations: one head, base to head and back, and no drift from the models."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.migrations import (
    MIGRATION_LOCK_ID,
    alembic_config,
    downgrade,
    upgrade,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def current_revisions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(text("SELECT version_num FROM alembic_version")))


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def test_there_is_a_single_head() -> None:
    """The revision history has exactly one head."""
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


async def test_upgrade_downgrade_upgrade(empty_engine: AsyncEngine) -> None:
    """It upgrades an empty database to head, downgrades to base, and upgrades again."""
    # At least these tables: the project's own models and revisions add more.
    await upgrade(empty_engine)
    assert await table_names(empty_engine) >= {"alembic_version", "tutorials"}
    await downgrade(empty_engine, "base")
    assert await table_names(empty_engine) == {"alembic_version"}
    await upgrade(empty_engine)
    assert await table_names(empty_engine) >= {"alembic_version", "tutorials"}


async def test_models_match_the_migrations(engine: AsyncEngine) -> None:
    """`alembic check` finds no difference between the models and the migrated schema."""

    def check(connection: Connection) -> None:
        command.check(alembic_config(connection))

    async with engine.connect() as connection:
        await connection.run_sync(check)


def test_offline_sql_needs_no_database() -> None:
    """`alembic upgrade head --sql` prints the DDL with no database to reach."""
    environment = {**os.environ, "DATABASE_URL": "postgresql://nobody@unreachable.invalid/none"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "CREATE TABLE tutorials" in result.stdout
    assert "CONSTRAINT pk_tutorials PRIMARY KEY (tutorial_id)" in result.stdout


async def test_concurrent_upgrades_queue_instead_of_racing(empty_engine: AsyncEngine) -> None:
    """Four `alembic upgrade head` started at once all succeed; the database is at head once."""
    url = empty_engine.url.render_as_string(hide_password=False)
    processes = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "alembic", "upgrade", "head"),
            cwd=PROJECT_ROOT,
            env={**os.environ, "DATABASE_URL": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [(await process.communicate())[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
    assert await current_revisions(empty_engine) == [head()]


async def test_programmatic_upgrade_waits_for_the_migration_lock(
    empty_engine: AsyncEngine,
) -> None:
    """`upgrade()` from async code takes the same advisory lock as the command line."""
    async with empty_engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        migrating = asyncio.create_task(upgrade(empty_engine))
        await asyncio.sleep(0.5)
        assert not migrating.done()
        await holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        await holder.commit()
    await asyncio.wait_for(migrating, timeout=30)
    assert await current_revisions(empty_engine) == [head()]


async def test_env_accepts_an_async_engine(empty_engine: AsyncEngine) -> None:
    """An AsyncEngine in `config.attributes["connection"]` works, as pytest-alembic passes it."""
    config = alembic_config()
    config.attributes["connection"] = empty_engine
    # From synchronous code, as pytest-alembic calls it: env.py runs its own event loop.
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await current_revisions(empty_engine) == [head()]

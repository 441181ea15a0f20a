"""Migrations: one head, base to head and back, and no drift from the models."""

import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.migrations import alembic_config, downgrade, upgrade

PROJECT_ROOT = Path(__file__).resolve().parents[1]


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


def test_there_is_a_single_head() -> None:
    """The revision history has exactly one head."""
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


async def test_upgrade_downgrade_upgrade(empty_engine: AsyncEngine) -> None:
    """It upgrades an empty database to head, downgrades to base, and upgrades again."""
    await upgrade(empty_engine)
    assert await table_names(empty_engine) == {"alembic_version", "tutorials"}
    await downgrade(empty_engine, "base")
    assert await table_names(empty_engine) == {"alembic_version"}
    await upgrade(empty_engine)
    assert await table_names(empty_engine) == {"alembic_version", "tutorials"}


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

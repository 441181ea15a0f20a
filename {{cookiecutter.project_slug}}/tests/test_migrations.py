"""Migrations: one head, base to head and back, and no drift from the models."""

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.migrations import alembic_config, downgrade, upgrade


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


def alembic_check(connection: Connection) -> None:
    """`alembic check` on `connection`: raises when the models and the database differ."""
    command.check(alembic_config(connection))


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

    async with engine.connect() as connection:
        await connection.run_sync(alembic_check)

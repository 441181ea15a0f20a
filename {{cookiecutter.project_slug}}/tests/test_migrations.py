"""Migrations: pytest-alembic's standard checks, on an empty database of their own.

One head; every revision upgrades from base; each downgrades and upgrades again; no
difference between the models and the migrated schema (`alembic check`). And one check of
our own: downgrading to base leaves no table behind.
"""

import pytest
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core.migrations import downgrade, upgrade

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_engine(empty_engine: AsyncEngine) -> AsyncEngine:
    """pytest-alembic's database: a new, empty one (env.py accepts an AsyncEngine)."""
    return empty_engine


async def test_downgrade_to_base_leaves_no_table(empty_engine: AsyncEngine) -> None:
    """Every revision's downgrade undoes its upgrade (pytest-alembic only checks that they
    run): after base, only alembic's own table is left."""
    await upgrade(empty_engine)
    await downgrade(empty_engine, "base")
    async with empty_engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert set(tables) == {"alembic_version"}

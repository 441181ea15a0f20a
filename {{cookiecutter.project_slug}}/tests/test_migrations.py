"""Migrations: pytest-alembic's standard checks, on an empty database of their own.

One head; every revision upgrades from base; each downgrades and upgrades again; no
difference between the models and the migrated schema (`alembic check`).
"""

import pytest
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy.ext.asyncio import AsyncEngine

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

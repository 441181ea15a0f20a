"""Tests are isolated by default: the test database only, every test's writes undone."""

import os

import pytest
from sqlalchemy import insert, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.core.database import get_session
from {{ cookiecutter.project_slug }}.models import Tutorial
from {{ cookiecutter.project_slug }}.repository import save_tutorial
from {{ cookiecutter.project_slug }}.settings import get_settings

from .conftest import DEVELOPMENT_URL, TEST_DATABASE
from .server_state import count_tutorials


def test_everything_points_at_the_test_database() -> None:
    """The settings, the app's engine and child processes name the test database."""
    assert DEVELOPMENT_URL.database != TEST_DATABASE
    assert get_settings().database_url_object.database == TEST_DATABASE
    assert database.get_engine().url.database == TEST_DATABASE
    assert make_url(os.environ["DATABASE_URL"]).database == TEST_DATABASE


async def test_a_plain_test_saves_through_get_session() -> None:
    """What a user writes first: no fixture named, `get_session()` commits (the next test
    shows that nothing stays)."""
    async with get_session() as session:
        await save_tutorial(session, "leak probe")
    async with get_session() as session:
        assert await count_tutorials(session, "leak probe") == 1


async def test_a_plain_test_writes_on_the_apps_engine(engine: AsyncEngine) -> None:
    """Code that takes its own connection from the app's engine commits for real..."""
    async with database.get_engine().begin() as connection:
        await connection.execute(insert(Tutorial).values(name="leak probe on the engine"))
    assert await count_tutorials(engine, "leak probe") == 1


@pytest.mark.commits
async def test_a_committing_test_really_commits(engine: AsyncEngine) -> None:
    """`@pytest.mark.commits`: other connections see the rows while the test runs."""
    async with get_session() as session:
        await save_tutorial(session, "leak probe committed")
    assert await count_tutorials(engine, "leak probe committed") == 1


async def test_no_earlier_test_left_a_row(engine: AsyncEngine) -> None:
    """...and whatever the tests above wrote, rolled back or cleaned up, is gone."""
    assert await count_tutorials(engine, "leak probe") == 0

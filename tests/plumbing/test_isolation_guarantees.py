"""Tests are isolated by default: the test database only, every test's writes undone."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }} import database
from {{ cookiecutter.project_slug }}.database import get_session
from {{ cookiecutter.project_slug }}.migrations import upgrade
from {{ cookiecutter.project_slug }}.models import Tutorial
from {{ cookiecutter.project_slug }}.repository import save_tutorial
from {{ cookiecutter.project_slug }}.settings import get_settings

from .conftest import (
    DEVELOPMENT_URL,
    TEST_DATABASE,
    with_suffix,
)
from .server_state import count_tutorials
from .servers import PROJECT_ROOT

USERS_FIRST_TEST = f"""
from {database.__package__}.database import get_session
from {database.__package__}.repository import save_tutorial


async def test_save() -> None:
    async with get_session() as session:
        await save_tutorial(session, "written by a first test")
"""


def test_everything_points_at_the_test_database() -> None:
    """The settings, the app's engine and child processes name the test database."""
    assert DEVELOPMENT_URL.database != TEST_DATABASE
    assert get_settings().database_url_object.database == TEST_DATABASE
    assert database.engine.url.database == TEST_DATABASE
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
    async with database.engine.begin() as connection:
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


@pytest.mark.commits
async def test_a_first_test_run_alone_never_writes_to_the_development_database(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    """`pytest test_first.py` with .env naming a migrated development database: the test
    passes, the development database stays empty, the test database is dropped after."""
    (tmp_path / "test_first.py").write_text(USERS_FIRST_TEST, encoding="utf-8")
    development = empty_engine.url
    await upgrade(empty_engine)
    result = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("-p", "tests.conftest", "--rootdir", str(PROJECT_ROOT)),
            *("-c", str(PROJECT_ROOT / "pyproject.toml"), str(tmp_path / "test_first.py")),
        ],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "DATABASE_URL": development.render_as_string(hide_password=False),
            "PYTEST_XDIST_WORKER": "",  # a run of its own, even from a worker of `pytest -n`
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert await count_tutorials(empty_engine, "written by") == 0
    async with empty_engine.connect() as connection:
        leftover = await connection.scalar(
            text("SELECT count(*) FROM pg_database WHERE datname = :name"),
            {"name": with_suffix(development.database or "", "test")},
        )
    assert leftover == 0

"""The isolation fixture from a user's side: a first test run alone, with .env naming a
migrated development database, never writes there."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core.migrations import upgrade

from ..server_state import count_tutorials, with_suffix
from .servers import PROJECT_ROOT

USERS_FIRST_TEST = """
from {{ cookiecutter.project_slug }}.core.database import get_session
from {{ cookiecutter.project_slug }}.repository import save_tutorial


async def test_save() -> None:
    async with get_session() as session:
        await save_tutorial(session, "written by a first test")
"""


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
            "DATABASE_MIGRATION_URL": "",  # one role: the test's URL only
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

"""The baked project's own toolchain, run for real: install, lint, type-check, test, migrate."""

from pathlib import Path
from typing import Any

import pytest

from .baking import bake, install, run
from .postgres import Postgres

ADVERSARIAL_PASSWORD = "p@ss:w/rd%41#?&=é 'q\"x"


@pytest.mark.parametrize(
    "command",
    [
        ("make", "lint"),  # ruff check, ruff format --check, mypy --strict
        ("pytest", "-q", "-p", "no:cacheprovider"),
        ("pre-commit", "validate-config", ".pre-commit-config.yaml"),
    ],
    ids=" ".join,
)
def test_baked_tool_passes(project: Path, command: tuple[str, ...]) -> None:
    """The baked project's lint (ruff, mypy), pytest and pre-commit config pass, skipping none."""
    result = run(project, *command)
    assert " skipped" not in result.stdout  # PgBouncer and restart tests need their binaries


def test_alembic_round_trip_and_demo(project: Path) -> None:
    """upgrade head, check, the demo, downgrade base, upgrade head again: all from .env alone."""
    run(project, "alembic", "upgrade", "head")
    run(project, "alembic", "check")
    first = run(project, "python", "-m", project.name).stdout.splitlines()
    second = run(project, "python", "-m", project.name).stdout.splitlines()
    assert len(second) == len(first) + 1
    run(project, "alembic", "downgrade", "base")
    run(project, "alembic", "upgrade", "head")


def test_a_wrong_password_fails_cleanly_without_showing_it(project: Path) -> None:
    """Authentication failure: a one-line error, exit 1, no password in the output."""
    env_file = project / ".env"
    original = env_file.read_text(encoding="utf-8")
    env_file.write_text(original.replace("@", "x@", 1), encoding="utf-8")
    try:
        result = run(project, "python", "-m", project.name, check=False)
    finally:
        env_file.write_text(original, encoding="utf-8")
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert "***" in result.stderr


def test_an_adversarial_password_works_end_to_end(cookies: Any, postgres: Postgres) -> None:
    """A password full of URL metacharacters migrates, runs and passes the baked tests."""
    project = bake(
        cookies, postgres, ADVERSARIAL_PASSWORD, db_user="app user-ü", db_name="app db-é"
    )
    install(project)
    run(project, "alembic", "upgrade", "head")
    assert "Tutorial saved" in run(project, "python", "-m", project.name).stdout
    run(project, "pytest", "-q", "-p", "no:cacheprovider")
    for path in project.rglob("*"):
        if path.is_file() and ".venv" not in path.parts and path.name != ".env":
            assert ADVERSARIAL_PASSWORD.encode() not in path.read_bytes(), path

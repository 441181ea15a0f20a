"""Alembic in a baked project after week one: change a model, detect, autogenerate, migrate."""

import re
from pathlib import Path
from typing import Any

from .baking import bake, install, run
from .postgres import Postgres


def test_autogenerate_cycle(cookies: Any, postgres: Postgres) -> None:
    """A new column fails `alembic check` by name; autogenerate writes a clean revision."""
    project = bake(cookies, postgres, db_user="cycle_user", db_name="cycle_db")
    install(project)
    run(project, "alembic", "upgrade", "head")

    models = project / "src" / project.name / "models.py"
    source = models.read_text(encoding="utf-8")
    column = "    name: Mapped[str] = mapped_column(String(255))\n"
    models.write_text(source.replace(column, column + "    summary: Mapped[str | None]\n"))

    drift = run(project, "alembic", "check", check=False)
    assert drift.returncode != 0
    assert "summary" in drift.stdout + drift.stderr

    run(project, "alembic", "revision", "--autogenerate", "-m", "add tutorial summary")
    versions = sorted((project / "alembic" / "versions").glob("*.py"))
    assert len(versions) == 2
    revision = versions[-1]
    assert re.fullmatch(
        r"\d{4}_\d{2}_\d{2}_\d{4}-[0-9a-f]{12}_add_tutorial_summary\.py", revision.name
    )
    assert "op.add_column" in revision.read_text(encoding="utf-8")

    run(project, "ruff", "check", ".")
    run(project, "ruff", "format", "--check", ".")
    run(project, "mypy", "--strict")
    run(project, "alembic", "upgrade", "head")
    run(project, "alembic", "check")
    run(project, "alembic", "downgrade", "-1")
    run(project, "alembic", "upgrade", "head")
    run(project, "pytest", "-q", "-p", "no:cacheprovider", "tests/test_migrations.py")


def test_revision_files_sort_by_date(cookies: Any) -> None:
    """The shipped revision follows the date-prefixed file_template, as new ones will."""
    versions = Path(cookies.bake().project_path) / "alembic" / "versions"
    [initial] = versions.glob("*.py")
    assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}-[0-9a-f]{12}_create_tutorials\.py", initial.name)

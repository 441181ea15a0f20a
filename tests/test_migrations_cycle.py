"""Alembic in a baked project after week one: change a model, detect, autogenerate, migrate."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .baking import TEMPLATE_UV, bake, install, run
from .postgres import Postgres


def add_a_summary_column(project: Path) -> None:
    """What a user does in week one: a new nullable column on the model."""
    models = project / "src" / project.name / "models.py"
    source = models.read_text(encoding="utf-8")
    column = "    name: Mapped[str] = mapped_column(String(255))\n"
    models.write_text(source.replace(column, column + "    summary: Mapped[str | None]\n"))


def test_autogenerate_cycle(cookies: Any, postgres: Postgres) -> None:
    """A new column fails `alembic check` by name; autogenerate writes a clean revision."""
    project = bake(cookies, postgres, db_user="cycle_user", db_name="cycle_db")
    install(project)
    run(project, "alembic", "upgrade", "head")

    add_a_summary_column(project)

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


def test_autogenerate_without_the_dev_group(
    cookies: Any, postgres: Postgres, tmp_path: Path
) -> None:
    """Installed without the dev group (no ruff): the revision is written, the command
    succeeds, and the hook says the file was not formatted."""
    project = bake(cookies, postgres, db_user="no_dev_user", db_name="no_dev_db")
    venv = tmp_path / "venv"
    uv = str(TEMPLATE_UV)
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-e", str(project)],
        check=True,
    )
    assert not (venv / "bin" / "ruff").exists()
    run(project, "alembic", "upgrade", "head", venv=venv)
    add_a_summary_column(project)
    result = run(project, "alembic", "revision", "--autogenerate", "-m", "add summary", venv=venv)
    assert "was not formatted: ruff is not installed" in result.stdout + result.stderr
    assert len(list((project / "alembic" / "versions").glob("*_add_summary.py"))) == 1

"""The baked project's own toolchain, run for real: install, lint, type-check, test, migrate."""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .baking import bake, install, project_env, run
from .postgres import Postgres, free_port


@pytest.fixture(scope="module", params=["none", "fastapi"], ids="web_framework={}".format)
def any_project(request: pytest.FixtureRequest, cookies_session: Any, postgres: Postgres) -> Path:
    """The shared default bake, then one with the web service: each choice, installed."""
    if request.param == "none":
        project: Path = request.getfixturevalue("project")
        return project
    # Its own slug, so its own role and database: provisioning the default slug's role again
    # would change the password the shared bake's .env holds.
    baked = bake(cookies_session, postgres, project_slug="web_service", web_framework=request.param)
    install(baked)
    return baked


@pytest.mark.parametrize(
    "command",
    [
        ("make", "lint"),  # ruff check, ruff format --check, mypy --strict, zizmor
        ("pytest", "-q", "-p", "no:cacheprovider"),
        ("pre-commit", "validate-config", ".pre-commit-config.yaml"),
    ],
    ids=" ".join,
)
def test_baked_tool_passes(any_project: Path, command: tuple[str, ...]) -> None:
    """The baked project's lint (ruff, mypy, zizmor), pytest and pre-commit config pass, skipping
    none."""
    result = run(any_project, *command)
    assert " skipped" not in result.stdout  # PgBouncer and restart tests need their binaries


def test_make_run_serves_the_api(any_project: Path) -> None:
    """With the web service, `make run` serves it (auto-reloading); without, there is no run."""
    if (any_project / "web.mk").exists():
        port = free_port()
        # Its own process group: make, uvicorn's reloader and its server stop together.
        with subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=any_project,
            env=project_env(any_project),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ) as server:
            try:
                statuses = [
                    get_status(f"http://127.0.0.1:{port}{path}") for path in ["/health", "/ready"]
                ]
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
        assert statuses == [200, 200]
    else:
        result = run(any_project, "make", "run", check=False)
        assert "No rule to make target 'run'" in result.stderr


def get_status(url: str) -> int:
    """GET `url` until a server answers (60 seconds at most): its status."""
    for _ in range(600):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            time.sleep(0.1)
    return 0


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

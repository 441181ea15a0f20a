"""The baked project's own toolchain, run for real: install, lint, type-check, test, migrate."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .baking import (
    BAKED_TESTS,
    PLUMBING_REQUIREMENTS,
    TEMPLATE_UV,
    UV_ENV,
    add_plumbing_tests,
    bake,
    install,
    project_env,
    run,
)
from .postgres import Postgres, free_port

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


@pytest.fixture(scope="module")
def web_project(cookies_session: Any, postgres: Postgres) -> Path:
    """A bake with the web service and the plumbing's tests, installed and migrated."""
    # Its own slug, so its own role and database: provisioning the default slug's role again
    # would change the password the shared bake's .env holds.
    baked = bake(cookies_session, postgres, project_slug="web_service", web_framework="fastapi")
    add_plumbing_tests(baked)
    install(baked)
    run(baked, "alembic", "upgrade", "head")
    return baked


@pytest.fixture(scope="module", params=["none", "fastapi"], ids="web_framework={}".format)
def any_project(request: pytest.FixtureRequest) -> Path:
    """The shared default bake, then one with the web service: each choice, installed."""
    project: Path = request.getfixturevalue("project" if request.param == "none" else "web_project")
    return project


@pytest.mark.parametrize(
    "command",
    [
        ("make", "lint"),  # ruff check, ruff format --check, mypy --strict, zizmor
        BAKED_TESTS,
        ("pre-commit", "validate-config", ".pre-commit-config.yaml"),
    ],
    ids=" ".join,
)
def test_baked_tool_passes(any_project: Path, command: tuple[str, ...]) -> None:
    """The baked project's lint (ruff, mypy, zizmor), pytest and pre-commit config pass, skipping
    none: on its own tests and the plumbing's."""
    result = run(any_project, *command)
    assert " skipped" not in result.stdout  # PgBouncer and restart tests need their binaries


def test_the_users_modules_import_without_settings_or_an_engine(any_project: Path) -> None:
    """Importing the user's modules needs no database setting (DATABASE_URL empty would
    fail any read of the settings) and builds no engine: that happens on first use."""
    package = any_project.name
    modules = ["models", "repository", "settings", "core.database"]
    if (any_project / "web.mk").exists():
        modules += ["schemas", "routes", "web"]
    probe = (
        f"import {', '.join(f'{package}.{module}' for module in modules)}\n"
        f"assert {package}.core.database.engine is None"
    )
    run(any_project, "python", "-c", probe, DATABASE_URL="")


@pytest.mark.parametrize("system", ["win32", "darwin"])
def test_the_bake_type_checks_for_windows_and_macos(any_project: Path, system: str) -> None:
    """mypy --strict as on those systems (where the CI job runs the bake's lint): a POSIX-only
    call must sit where mypy sees the platform (an if/else, not after an early return)."""
    paths = ("src", "scripts", "alembic", "tests", "--exclude", "tests/plumbing/")
    run(any_project, "mypy", "--strict", "--platform", system, *paths)


@contextmanager
def serving(project: Path, *command: str) -> Iterator[str]:
    """`command` (given `{port}` to serve on) running in `project` until exit: its base URL,
    once /health answers."""
    port = free_port()
    # Its own process group: make, uvicorn's reloader and its server stop together.
    with subprocess.Popen(
        [part.format(port=port) for part in command],
        cwd=project,
        env=project_env(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as server:
        try:
            base_url = f"http://127.0.0.1:{port}"
            assert get_status(f"{base_url}/health") == 200
            yield base_url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_make_run_serves_the_api(any_project: Path) -> None:
    """With the web service, `make run` serves it (auto-reloading); without, there is no run."""
    if (any_project / "web.mk").exists():
        with serving(any_project, "make", "run", "PORT={port}") as base_url:
            assert get_status(f"{base_url}/ready") == 200
    else:
        result = run(any_project, "make", "run", check=False)
        assert "No rule to make target 'run'" in result.stderr


def test_a_fuzzer_finds_nothing_wrong_with_the_service(web_project: Path, tmp_path: Path) -> None:
    """schemathesis, every check on (server errors, schema and status conformance, Allow
    headers, invalid data accepted, ...), against the service in uvicorn with its request
    timeout: bounded in examples and time, a fixed seed, no failure."""
    package = web_project.name
    uvicorn = ("uvicorn", f"{package}.web:app", "--port", "{port}")
    limits = ("--http", f"{package}.core.client_limits:HTTPProtocol")
    with serving(web_project, *uvicorn, *limits) as base_url:
        checks = ("--checks", "all", "--seed", "2026", "--workers", "1")
        bounds = ("--max-examples", "25", "--max-time", "40", "--request-timeout", "10")
        result = subprocess.run(
            [SCHEMATHESIS, "run", f"{base_url}/openapi.json", *checks, *bounds],
            cwd=tmp_path,  # its cache directory
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout[-6000:]


def test_the_oldest_versions_allowed_pass_the_tests(web_project: Path, tmp_path: Path) -> None:
    """The baked tests pass with the lowest version of each dependency pyproject.toml allows
    (`uv pip install --resolution lowest-direct`), as they do with the newest (above): a lower
    bound that no longer holds fails here, not in a user's project."""
    venv = tmp_path / "lowest"
    run(web_project, str(TEMPLATE_UV), "venv", "--quiet", str(venv), **UV_ENV)
    lowest = ("--resolution", "lowest-direct", "-e", ".", "--group", "dev", *PLUMBING_REQUIREMENTS)
    into = ("--python", str(venv / "bin" / "python"))
    run(web_project, str(TEMPLATE_UV), "pip", "install", "--quiet", *into, *lowest, **UV_ENV)
    # Bounded: an old version that hangs must fail the run, not stall it.
    result = run(web_project, *BAKED_TESTS, venv=venv, timeout=900)
    assert " skipped" not in result.stdout


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


def test_a_failing_command_names_the_versions_it_ran_with(project: Path) -> None:
    """A bake's command that fails says, in one line, which version of each package the bake
    and the plumbing name was installed: a break from a new release names it (issue #32)."""
    with pytest.raises(pytest.fail.Exception) as failure:
        run(project, "python", "-c", "raise SystemExit(3)")
    line = str(failure.value).splitlines()[-1]
    assert line.startswith("Resolved versions: ")
    for package in ("sqlalchemy", "asyncpg", "alembic", "trustme", "cryptography"):
        assert re.search(rf"\b{package} \d+\.\d+", line), (package, line)

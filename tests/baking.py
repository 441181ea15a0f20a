"""Baking, installing and running baked projects."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from hooks.post_gen_project import PASSWORD_VARIABLE

if TYPE_CHECKING:
    from .postgres import Postgres

TEMPLATE = Path(__file__).resolve().parents[1]
# uv in baked projects: the template's own (make install puts it in .venv), this interpreter,
# never a downloaded one.
TEMPLATE_UV = Path(sys.executable).with_name("uv")
UV_ENV = {"UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` (replay files, answers, the bake) whose bytes hold `secret`."""
    files = [path for path in root.rglob("*") if path.is_file()]
    return [path for path in files if secret.encode() in path.read_bytes()]


def project_env(project: Path, venv: Path | None = None) -> dict[str, str]:
    """Our environment for a command of the project's venv (or `venv`), without our
    database settings (so it reads only its .env) and make flags (from a `make test`)."""
    own = ("DATABASE_", "VIRTUAL_ENV", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env["PATH"] = f"{(venv or project / '.venv') / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def run(
    project: Path,
    *command: str,
    check: bool = True,
    venv: Path | None = None,
    timeout: float | None = None,
    **env_overrides: str,
) -> subprocess.CompletedProcess[str]:
    """Run a command of the project's venv (or `venv`) in the project (see `project_env`)."""
    env = project_env(project, venv) | env_overrides
    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def install(project: Path) -> None:
    """The baked `make install` with the template's own uv: the project and its dev group into
    its own .venv, and the embedded PostgreSQL binaries where this machine has none."""
    run(project, "make", "install", f"UV={TEMPLATE_UV} --quiet", **UV_ENV)


@contextmanager
def password_in_environment(password: str | None) -> Iterator[None]:
    """DATABASE_PASSWORD set to `password` (unset for None) for the hooks of bakes inside.

    pytest-cookies bakes in this process, and cookiecutter's hooks inherit its environment.
    (Not monkeypatch: hypothesis tests cannot take function-scoped fixtures.)
    """
    saved = os.environ.pop(PASSWORD_VARIABLE, None)
    if password is not None:
        os.environ[PASSWORD_VARIABLE] = password
    try:
        yield
    finally:
        os.environ.pop(PASSWORD_VARIABLE, None)
        if saved is not None:
            os.environ[PASSWORD_VARIABLE] = saved


def bake(cookies: Any, postgres: "Postgres", password: str | None = None, **context: str) -> Path:
    """Bake against `postgres` (with `password`, else a generated one), give the baked user its
    role and database, return the path."""
    context = {"db_host": postgres.host, "db_port": str(postgres.port), **context}
    with password_in_environment(password):
        result = cookies.bake(extra_context=context)
    assert result.exception is None, result.exception
    project = Path(result.project_path)
    url = urlsplit(read_env(project)["DATABASE_URL"])
    postgres.provision(
        unquote(url.username or ""), unquote(url.password or ""), unquote(url.path[1:])
    )
    return project


def read_env(project: Path) -> dict[str, str]:
    lines = (project / ".env").read_text(encoding="utf-8").splitlines()
    pairs = (line.partition("=") for line in lines if line and not line.startswith("#"))
    return {key: value.strip("'") for key, _, value in pairs}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_schema(schema: str, path: Path) -> None:
    """Validate `path` against a JSON schema that check-jsonschema ships (no network)."""
    subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", f"vendor.{schema}", str(path)],
        check=True,
        capture_output=True,
    )

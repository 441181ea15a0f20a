"""Fixtures: a real PostgreSQL server, and baking, installing and running baked projects."""

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]
LOCAL_POSTGRES = TEMPLATE / "{{cookiecutter.project_slug}}" / "scripts" / "local_postgres.py"
# uv in baked projects: this interpreter, never a downloaded one.
UV_ENV = {"UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}


def load_local_postgres() -> ModuleType:
    """The baked project's own server script (Jinja-free), reused to run the test server."""
    spec = importlib.util.spec_from_file_location("local_postgres", LOCAL_POSTGRES)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    # No __pycache__ inside the template: cookiecutter would try to render the .pyc.
    sys.dont_write_bytecode, saved = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Postgres:
    """A server we may create roles and databases on."""

    host: str
    port: int
    superuser: str
    password: str
    bindir: Path

    def sql(self, script: str, **variables: str) -> None:
        """Run `script` through psql; `:'name'` and `:"name"` quote variables safely."""
        assignments = [
            arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")
        ]
        subprocess.run(
            [
                *(str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *assignments),
                *("-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", "postgres"),
            ],
            input=script,
            text=True,
            check=True,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": self.password},
        )

    def provision(self, user: str, password: str, database: str) -> None:
        """A login role that may create databases (the baked tests do), owning `database`."""
        self.sql(
            'DROP DATABASE IF EXISTS :"database" WITH (FORCE);\n'
            'DROP ROLE IF EXISTS :"user";\n'
            "CREATE ROLE :\"user\" LOGIN CREATEDB PASSWORD :'password';\n"
            'CREATE DATABASE :"database" OWNER :"user";\n',
            user=user,
            password=password,
            database=database,
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The server in DATABASE_URL (a superuser's), else a throwaway one stopped at the end."""
    local_postgres = load_local_postgres()
    bindir = local_postgres.find_bindir()
    if bindir is None:
        pytest.fail(local_postgres.INSTALL_HINT)
    if url := os.environ.get("DATABASE_URL"):
        parts = urlsplit(url)
        yield Postgres(
            parts.hostname or "localhost",
            parts.port or 5432,
            unquote(parts.username or "postgres"),
            unquote(parts.password or ""),
            bindir,
        )
        return
    scratch = Path(tempfile.mkdtemp(prefix="template-postgres-"))
    scratch.chmod(0o755)  # our own fresh directory: the server's user must reach into it
    server = local_postgres.Server(bindir, scratch / "cluster", free_port())
    password = secrets.token_urlsafe(16)
    server.init("postgres", password)
    server.start()
    try:
        yield Postgres("127.0.0.1", server.port, "postgres", password, bindir)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run(
    project: Path,
    *command: str,
    check: bool = True,
    venv: Path | None = None,
    **env_overrides: str,
) -> subprocess.CompletedProcess[str]:
    """Run a command of the project's venv (or `venv`) in the project, reading only its .env
    (and no make flags from a `make test` around us)."""
    own = ("DATABASE_", "VIRTUAL_ENV", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env["PATH"] = f"{(venv or project / '.venv') / 'bin'}{os.pathsep}{env['PATH']}"
    env.update(env_overrides)
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def install(project: Path) -> None:
    """`uv sync`: the project's declared dependencies and dev group into its own .venv."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    env = {**os.environ, **UV_ENV}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv, "sync", "--quiet"], cwd=project, env=env, check=True)


def bake(cookies: Any, postgres: Postgres, **context: str) -> Path:
    """Bake against `postgres`, give the baked user its role and database, return the path."""
    context = {"db_host": postgres.host, "db_port": str(postgres.port), **context}
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


@pytest.fixture(scope="session")
def project(cookies_session: Any, postgres: Postgres) -> Path:
    """One project baked with the defaults (on the test server's port) and installed."""
    baked = bake(cookies_session, postgres)
    install(baked)
    return baked

"""A PostgreSQL server the template tests may create roles and databases on."""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .baking import TEMPLATE

LOCAL_POSTGRES = TEMPLATE / "{{cookiecutter.project_slug}}" / "scripts" / "local_postgres.py"


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


def reachable_scratch(prefix: str) -> Path:
    """A fresh directory of our own that other users may enter (a server run as `postgres`,
    a command run as `nobody` reach into it); the caller removes it."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    scratch.chmod(0o755)
    return scratch


@contextmanager
def throwaway_server(
    bindir: Path, password: str, settings: dict[str, str] | None = None
) -> Iterator[tuple[Any, Path]]:
    """A new PostgreSQL cluster of `bindir`'s (superuser `postgres`, `password`) on a free
    port, started with `settings`; yields the baked script's Server and its scratch directory,
    then stops and removes both."""
    scratch = reachable_scratch("template-postgres-")
    server = load_local_postgres().Server(bindir, scratch / "cluster", free_port())
    try:
        server.init("postgres", password)
        server.start(settings=settings)
        try:
            yield server, scratch
        finally:
            server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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

    def provision(
        self, user: str, password: str, database: str, app: tuple[str, str] | None = None
    ) -> None:
        """A login role that may create databases (the baked tests do), owning `database`,
        and the app's login role (`app`: its name and password) beside it, as `make db`
        makes them; what an earlier provision made, databases of the owner's included, goes
        first."""
        app_user, app_password = app or (user, password)
        self.sql(
            "SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database"
            " WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = :'user') \\gexec\n"
            'DROP DATABASE IF EXISTS :"database" WITH (FORCE);\n'
            'DROP ROLE IF EXISTS :"app_user";\n'
            'DROP ROLE IF EXISTS :"user";\n'
            "CREATE ROLE :\"user\" LOGIN CREATEDB PASSWORD :'password';\n"
            'CREATE DATABASE :"database" OWNER :"user";\n'
            + (
                ""
                if app_user == user
                else "CREATE ROLE :\"app_user\" LOGIN PASSWORD :'app_password';\n"
            ),
            user=user,
            password=password,
            database=database,
            app_user=app_user,
            app_password=app_password,
        )

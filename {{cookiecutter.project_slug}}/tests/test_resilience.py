"""`get_session()` under load, cancellation, server restarts, PgBouncer, and shutdown."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }} import database
from {{ cookiecutter.project_slug }}.database import create_engine, dispose, get_session
from {{ cookiecutter.project_slug }}.migrations import upgrade
from {{ cookiecutter.project_slug }}.repository import save_tutorial, save_tutorials

from .conftest import scratch_name, settings_for, temporary_database
from .own_postgres import PROJECT_ROOT, free_port, own_postgres, scratch_directory
from .server_state import count_tutorials, idle_in_transaction

Bind = Callable[[AsyncEngine], None]


async def save_in_own_session(name: str) -> None:
    async with get_session() as session:
        await save_tutorial(session, name)


@pytest.mark.commits
async def test_cancelled_sessions_leave_nothing_behind(
    engine: AsyncEngine, bind_get_session: Bind
) -> None:
    """60 tasks cancelled inside `get_session()` after a flush: no rows, no connections held."""
    wide = create_engine(settings_for(engine.url), pool_size=60, max_overflow=0)
    bind_get_session(wide)
    flushed = asyncio.Semaphore(0)

    async def save_then_hang(number: int) -> None:
        async with get_session() as session:
            await save_tutorial(session, f"cancelled {number}")
            flushed.release()
            await asyncio.sleep(3600)

    tasks = [asyncio.create_task(save_then_hang(number)) for number in range(60)]
    for _ in tasks:
        await flushed.acquire()
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    try:
        assert all(isinstance(result, asyncio.CancelledError) for result in results)
        assert wide.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert await idle_in_transaction(engine) == 0
        assert await count_tutorials(engine, "cancelled ") == 0
    finally:
        await wide.dispose()


@pytest.mark.commits
async def test_a_thousand_concurrent_sessions(engine: AsyncEngine) -> None:
    """1,000 concurrent saves with the default pool settings: no errors, 1,000 rows."""
    results = await asyncio.gather(
        *(save_in_own_session(f"load {number}") for number in range(1000)),
        return_exceptions=True,
    )
    assert [result for result in results if result is not None] == []
    assert await count_tutorials(engine, "load ") == 1000
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.commits
async def test_pool_exhaustion_raises_a_clear_error(
    engine: AsyncEngine, bind_get_session: Bind
) -> None:
    """When every connection is busy past pool_timeout, the caller gets an error, not a hang."""
    tiny = create_engine(settings_for(engine.url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    bind_get_session(tiny)
    try:
        async with get_session() as holding:
            await holding.execute(text("SELECT 1"))
            with pytest.raises(PoolTimeoutError, match="QueuePool limit of size 1"):
                await asyncio.wait_for(save_in_own_session("starved"), timeout=10)
    finally:
        await tiny.dispose()


@pytest.mark.commits
async def test_dispose_closes_every_pooled_connection() -> None:
    """`dispose()` at shutdown closes the app engine's pooled connections on the server."""

    async def backend_pid() -> int:
        async with database.engine.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.05)  # hold it, so the others open connections of their own
            return int(pid or 0)

    pids = await asyncio.gather(*(backend_pid() for _ in range(3)))
    assert database.engine.pool.checkedin() >= 3  # type: ignore[attr-defined]
    await dispose()
    observer = create_engine(settings_for(database.engine.url), pool_size=1)
    try:
        for _ in range(50):  # a backend exits just after its client hangs up
            async with observer.connect() as connection:
                alive = await connection.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                    {"pids": list(pids)},
                )
            if alive == 0:
                break
            await asyncio.sleep(0.1)
        assert alive == 0
    finally:
        await observer.dispose()


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[Any, URL]]:
    """A PostgreSQL server of this module's own, to restart; skipped without server binaries."""
    with own_postgres("restart_tester", "restarts") as server_and_url:
        yield server_and_url


@pytest.mark.commits
async def test_a_restarted_server_costs_no_failed_request(
    own_server: tuple[Any, URL], bind_get_session: Bind
) -> None:
    """The server restarts between two uses of a warm pool; the next session just works."""
    server, url = own_server
    engine = create_engine(settings_for(url))
    bind_get_session(engine)
    try:
        await upgrade(engine)
        await save_in_own_session("before the restart")
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await save_in_own_session("after the restart")
        assert await count_tutorials(engine, "after the restart") == 1
    finally:
        await engine.dispose()


def userlist_line(user: str, password: str) -> str:
    """A line of PgBouncer's auth_file: both fields double-quoted, inner quotes doubled."""
    return " ".join('"{}"'.format(field.replace('"', '""')) for field in (user, password))


@pytest.fixture(scope="module")
def pgbouncer(engine: AsyncEngine) -> Iterator[URL]:
    """PgBouncer in transaction pooling mode in front of the test server; skipped if absent."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        pytest.skip("pgbouncer is not installed")
    server_url, port, scratch = engine.url, free_port(), scratch_directory()
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
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
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


@pytest.mark.commits
async def test_four_hundred_sessions_through_pgbouncer(
    engine: AsyncEngine, pgbouncer: URL, bind_get_session: Bind
) -> None:
    """With DATABASE_PGBOUNCER on, 400 concurrent sessions (ORM and COPY) run with no error."""
    bounced = create_engine(settings_for(pgbouncer, database_pgbouncer=True))
    bind_get_session(bounced)

    async def copy_in_own_session(number: int) -> None:
        async with get_session() as session:
            await save_tutorials(session, [f"bounced copy {number}.{row}" for row in range(10)])

    try:
        results = await asyncio.gather(
            *(save_in_own_session(f"bounced {number}") for number in range(300)),
            *(copy_in_own_session(number) for number in range(100)),
            return_exceptions=True,
        )
        assert [result for result in results if result is not None] == []
        assert await count_tutorials(engine, "bounced ") == 300 + 1000
    finally:
        await bounced.dispose()


@pytest.mark.commits
async def test_alembic_upgrade_through_pgbouncer(pgbouncer: URL) -> None:
    """`alembic upgrade head` works through PgBouncer in transaction mode."""
    async with temporary_database(scratch_name("bounced")) as url:
        through_pgbouncer = pgbouncer.set(database=url.database)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "alembic", "upgrade", "head"),
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                "DATABASE_URL": through_pgbouncer.render_as_string(hide_password=False),
                "DATABASE_PGBOUNCER": "true",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()

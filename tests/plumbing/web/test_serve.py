"""`python -m <package>.core.serve` in a process of its own: the drain on SIGTERM, the budget;
uvicorn workers sharing a connection budget."""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.settings import Settings

from ...server_state import count_tutorials
from ..conftest import settings_for
from ..servers import PROJECT_ROOT, SMALL_SERVER, free_port, running_server


class Serving:
    """A started `serve` process, its base URL, and what it logged so far."""

    def __init__(self, process: asyncio.subprocess.Process, base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.lines: list[str] = []

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode())


SERVE = ("{{ cookiecutter.project_slug }}.core.serve", "--host", "127.0.0.1")


@asynccontextmanager
async def serve(*command: str, **environment: str) -> AsyncIterator[Serving]:
    """`python -m <package>.core.serve` (or `python -m` `command`) on a free port, its metrics on
    another, with `environment`, until it started; then yields, and stops it (if still
    running) when the block ends."""
    port = free_port()
    if "DATABASE_URL" in environment:  # another server: not the test database's owner either
        environment.setdefault("DATABASE_MIGRATION_URL", "")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", *(command or SERVE), "--port", str(port)),
        cwd=PROJECT_ROOT,
        env={**os.environ, "METRICS_PORT": str(free_port()), **environment},
        stderr=asyncio.subprocess.PIPE,
    )
    serving = Serving(process, f"http://127.0.0.1:{port}")
    reader = asyncio.create_task(serving.read_log())
    try:
        for _ in range(300):  # 30 s at most
            if "Uvicorn running" in serving.log:
                break
            assert process.returncode is None, serving.log
            await asyncio.sleep(0.1)
        yield serving
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # no drain
        await asyncio.wait_for(process.wait(), timeout=30)
        await reader


@pytest.mark.commits
async def test_sigterm_drains_then_finishes_the_requests_in_flight(engine: AsyncEngine) -> None:
    """On SIGTERM, /ready answers 503 at once while requests are still served; then the
    server stops listening, the request in flight completes, and the pool is disposed."""
    environment = {"SHUTDOWN_DRAIN_SECONDS": "1.5", "SHUTDOWN_GRACE_SECONDS": "10"}
    async with (
        serve(**environment) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=20) as client,
    ):
        assert (await client.get("/ready")).status_code == 200
        async with engine.connect() as blocker:
            # A slow request: its INSERT waits for this lock until we let go.
            await blocker.execute(text("LOCK TABLE tutorials IN ACCESS EXCLUSIVE MODE"))
            slow = asyncio.create_task(client.post("/tutorials", json={"name": "in flight"}))
            await asyncio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as other:
                draining = [(await other.get(path)).status_code for path in ("/ready", "/health")]
            await asyncio.sleep(2)  # the drain is over: no new connection is accepted
            async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as other:
                with pytest.raises(httpx.ConnectError):
                    await other.get("/health")
            assert not slow.done()
            await blocker.rollback()
        assert (await asyncio.wait_for(slow, timeout=15)).status_code == 201
        await asyncio.wait_for(server.process.wait(), timeout=15)
    assert draining == [503, 200]
    assert await count_tutorials(engine, "in flight") == 1
    assert "SIGTERM: /ready answers 503; draining for 1.5 s" in server.log
    assert "Application shutdown complete" in server.log  # the lifespan disposed of the pool
    assert "connection budget" not in server.log  # 1 x 30 of the default 100
    assert "Traceback" not in server.log


@pytest.fixture(scope="module")
def small_server() -> Iterator[URL]:
    """A server of our own allowing 20 connections, 3 of them for superusers."""
    with running_server("budget_tester", "budget", SMALL_SERVER) as (_, url):
        yield url


async def test_over_budget_serve_warns_once_with_the_fix(small_server: URL) -> None:
    """At startup, pools that do not fit the server's connections: one warning line."""
    url = small_server.render_as_string(hide_password=False)
    async with serve(DATABASE_URL=url, WEB_CONCURRENCY="2") as server:
        pass
    warnings = [line for line in server.lines if "connection budget exceeded" in line]
    assert len(warnings) == 1, server.log
    assert "2 process(es) x 30 connections" in warnings[0]
    assert "allows 17 (max_connections 20 - 3 reserved)" in warnings[0]


def test_drain_and_grace_fit_the_orchestrators_grace_period() -> None:
    """The defaults: drain + grace below Kubernetes' 30 s, a statement's timeout below the
    grace, so the requests in flight end before SIGKILL."""
    settings = Settings()  # type: ignore[call-arg]  # from the environment
    assert settings.shutdown_drain_seconds + settings.shutdown_grace_seconds < 30
    assert settings.database_command_timeout < settings.shutdown_grace_seconds


async def test_workers_sharing_a_budget_fit_a_small_server(small_server: URL) -> None:
    """WEB_CONCURRENCY=3 uvicorn workers (uvicorn reads it as --workers) share
    DATABASE_CONNECTION_BUDGET=15 on a server that lets them open 17: 270 writes, 90 at a
    time, all succeed, and the server never holds more than 15 of their connections. With
    the default pools (3 x 30) the same load ran out of connection slots: 58 answered 503."""
    url = small_server.render_as_string(hide_password=False)
    environment = {"WEB_CONCURRENCY": "3", "DATABASE_CONNECTION_BUDGET": "15"}
    # A keep-alive of a minute: a busy machine's load client may leave a connection idle for
    # uvicorn's default 5 s, and its next POST would race the server's close (ReadError).
    command = ("uvicorn", "{{ cookiecutter.project_slug }}.web:app", "--timeout-keep-alive", "60")
    async with serve(
        *command, DATABASE_URL=url, MIGRATE_ON_STARTUP="true", **environment
    ) as server:
        for _ in range(300):  # every worker migrated (or found it done) and started
            if server.log.count("Application startup complete") == 3:
                break
            await asyncio.sleep(0.1)
        limits = httpx.Limits(max_connections=90)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
            responses = await asyncio.gather(
                *(client.post("/tutorials", json={"name": f"n {n}"}) for n in range(270))
            )
        # The pools close no connection they opened (no overflow): what is open now is the most
        # they ever held.
        observer = create_engine(settings_for(small_server), poolclass=NullPool)
        async with observer.connect() as connection:
            held = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()"
                )
            )
        await observer.dispose()
    assert {response.status_code for response in responses} == {201}
    assert 3 <= int(held or 0) <= 15

"""The HTTP service in a real uvicorn server: load, clients that hang up, database restarts."""

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import URL, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core.client_limits import limited_protocol
from {{ cookiecutter.project_slug }}.web import create_app

from ...server_state import count_tutorials
from ..conftest import idle_in_transaction
from ..servers import PROJECT_ROOT, free_port
from .conftest import add_failing_routes


@asynccontextmanager
async def serving(app: FastAPI, **config: Any) -> AsyncIterator[str]:
    """Run `app` in uvicorn (with `config`) on a free port of this process's loop; yield its
    base URL."""
    port = free_port()
    config = {"host": "127.0.0.1", "port": port, "log_level": "warning", **config}
    server = uvicorn.Server(uvicorn.Config(app, **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def settled(engine: AsyncEngine) -> tuple[int, int]:
    """Connections checked out of the app's pool and idle-in-transaction backends, once both
    reach 0 or 10 seconds pass (a backend's state changes just after its client's)."""
    for _ in range(100):
        state = engine.pool.checkedout(), await idle_in_transaction(engine)  # type: ignore[attr-defined]
        if state == (0, 0):
            break
        await asyncio.sleep(0.1)
    return state


@pytest.mark.commits
async def test_five_hundred_concurrent_requests(engine: AsyncEngine) -> None:
    """500 concurrent writes and reads: all succeed; no connection or transaction is left."""
    async with (
        serving(create_app()) as base_url,
        httpx.AsyncClient(
            base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=500)
        ) as client,
    ):
        seed = (await client.post("/tutorials", json={"name": "load seed"})).json()["tutorial_id"]
        requests = [
            *(client.post("/tutorials", json={"name": f"load {n}"}) for n in range(200)),
            *(client.get(f"/tutorials/{seed}") for _ in range(150)),
            *(client.get("/tutorials", params={"limit": 20}) for _ in range(100)),
            *(client.get("/ready") for _ in range(50)),
        ]
        responses = await asyncio.gather(*requests)
        statuses = sorted({response.status_code for response in responses})
        assert statuses == [200, 201]
        assert await settled(engine) == (0, 0)
    assert await count_tutorials(engine, "load ") == 201


# Steady load from a process of its own (the server's loop gets this process's CPU to
# itself, as behind a real client): `concurrency` users, each sending `requests` writes and
# reads of the tutorial `seed`, every answer checked.
STEADY_LOAD = """
import asyncio, sys, httpx
base_url, seed, concurrency, requests = sys.argv[1], *map(int, sys.argv[2:])
async def user(client):
    for number in range(requests):
        created = await client.post("/tutorials", json={"name": f"steady {number}"})
        read = await client.get(f"/tutorials/{seed}")
        assert (created.status_code, read.status_code) == (201, 200), created.text
async def main():
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
asyncio.run(main())
"""


async def steady_load(base_url: str, seed: int, concurrency: int, requests: int) -> None:
    arguments = (base_url, *map(str, (seed, concurrency, requests)))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STEADY_LOAD, *arguments, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()


@pytest.mark.commits
async def test_steady_load_opens_no_connection(engine: AsyncEngine) -> None:
    """Once the pool is full, steady load at c=1, 64 and 200 (writes and reads) opens no new
    connection: the pool (30 + 0 by default) closes none it opened; requests beyond it wait."""
    connects: list[object] = []

    def count(*_: object) -> None:
        connects.append(_)

    # A keep-alive of a minute: on a busy machine a load client may leave a connection idle
    # for uvicorn's default 5 s, and its next POST races the server's close (ReadError).
    async with serving(create_app(), timeout_keep_alive=60) as base_url:
        async with engine.begin() as connection:
            insert = "INSERT INTO tutorials (name) VALUES ('seed') RETURNING tutorial_id"
            seed = int(await connection.scalar(text(insert)))
        size = engine.pool.size()  # type: ignore[attr-defined]
        held = [await engine.connect() for _ in range(size)]  # fill the pool: every one opened
        for connection in held:
            await connection.close()
        event.listen(engine.sync_engine, "connect", count)
        try:
            for concurrency, requests in ((1, 30), (64, 5), (200, 2)):
                await steady_load(base_url, seed, concurrency, requests)
        finally:
            event.remove(engine.sync_engine, "connect", count)
        assert engine.pool.checkedin() == size  # type: ignore[attr-defined]
    assert connects == []


@pytest.mark.commits
async def test_clients_hanging_up_mid_request_leave_no_transaction(engine: AsyncEngine) -> None:
    """Clients give up while their requests wait on a lock: nothing is left open after."""
    async with (
        serving(create_app()) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=0.5) as client,
    ):
        async with engine.connect() as blocker:
            await blocker.execute(text("LOCK TABLE tutorials IN ACCESS EXCLUSIVE MODE"))
            results = await asyncio.gather(
                *(client.post("/tutorials", json={"name": f"gone {n}"}) for n in range(20)),
                return_exceptions=True,
            )
            assert all(isinstance(result, httpx.ReadTimeout) for result in results)
            await blocker.rollback()  # the waiting requests go on, with nobody to answer
        assert await settled(engine) == (0, 0)


@pytest.mark.commits
async def test_a_database_restart_under_a_running_server(own_server: tuple[Any, URL]) -> None:
    """Three workers migrating an empty database at startup all start; while it is down,
    /ready and the routes answer 503; once it is back, the next requests succeed."""
    server, url = own_server
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--port", str(port), "--workers", "3"]
    environment = {
        **os.environ,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "DATABASE_MIGRATION_URL": "",  # one role on this server
        "MIGRATE_ON_STARTUP": "true",
    }
    process = await asyncio.create_subprocess_exec(
        *command,
        "{{ cookiecutter.project_slug }}.web:app",
        cwd=PROJECT_ROOT,
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def read_log() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            lines.append(line.decode())

    reader = asyncio.create_task(read_log())
    # A new connection per request: the workers take turns accepting them.
    one_per_request = httpx.Limits(max_keepalive_connections=0)
    try:
        for _ in range(600):  # every worker migrated (or found it done) and started
            if "".join(lines).count("Application startup complete") == 3:
                break
            assert process.returncode is None, "".join(lines)
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, limits=one_per_request
        ) as client:
            assert (await client.get("/ready")).status_code == 200
            assert (await client.post("/tutorials", json={"name": "before"})).status_code == 201
            await asyncio.to_thread(server.stop)
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 503
            assert (await client.post("/tutorials", json={"name": "lost"})).status_code == 503
            await asyncio.to_thread(server.start)
            assert (await client.get("/ready")).status_code == 200
            for number in range(6):
                created = await client.post("/tutorials", json={"name": f"after {number}"})
                assert created.status_code == 201
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
        await reader
    log = "".join(lines)
    assert log.count("Application startup complete") == 3, log
    assert (url.password or "") not in log
    assert "Traceback" not in log


async def exchange(base_url: str, *parts: bytes, pause: float = 0) -> bytes:
    """Send `parts` on one new connection (`pause` seconds apart); everything the server
    sends back until it closes the connection or 5 seconds pass."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        received = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while chunk := await reader.read(65536):
                    received += chunk
        return received
    finally:
        writer.close()


def request(method: str, path: str, body: bytes = b"", close: bool = False) -> bytes:
    headers = f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
    if body:
        headers += "Content-Type: application/json\r\n"
    if close:
        headers += "Connection: close\r\n"
    return headers.encode() + b"\r\n" + body


@pytest.mark.commits
@pytest.mark.logs_errors  # the 500s
async def test_a_500_keeps_the_connection_for_the_next_request(engine: AsyncEngine) -> None:
    """A handler's bug answers 500, and the same keep-alive connection serves the next
    request (the catch-all used to re-raise, and the server dropped the connection)."""
    app = create_app()
    add_failing_routes(app)
    async with serving(app) as base_url:
        answers = await exchange(
            base_url,
            request("POST", "/write-then-raise"),
            request("GET", "/health", close=True),
            pause=0.5,
        )
    assert answers.startswith(b"HTTP/1.1 500 ")
    assert b"HTTP/1.1 200 OK" in answers
    assert await count_tutorials(engine, "written, then ") == 0


async def test_a_declared_body_over_the_limit_is_refused_unread(engine: AsyncEngine) -> None:
    """A request declaring a 100 MB body gets 413 after sending 1 kB of it: the server reads
    no further (then closes the connection, which still holds the unread rest)."""
    async with serving(create_app()) as base_url:
        head = request("POST", "/tutorials").replace(b"Length: 0", b"Length: 100000000")
        answer = await exchange(base_url, head + b"x" * 1024)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_stalled_requests_are_cut_off_and_others_served(engine: AsyncEngine) -> None:
    """With a request timeout of 1 s, connections that sent nothing, half a request line or
    half a body are closed without an answer, while whole requests, even ones sent in parts
    0.1 s apart or answered slowly, are served."""
    app = create_app()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(1.5)
        return {"status": "slow"}

    timed = limited_protocol(request_timeout=1, max_header_bytes=32 * 1024)
    async with serving(app, http=timed) as base_url:
        half_body = request("POST", "/tutorials", b'{"name": "complete"}')[:-8]
        health = request("GET", "/health", close=True)
        started = time.monotonic()
        stalled = asyncio.gather(
            exchange(base_url),
            exchange(base_url, b"GET /health HT"),
            exchange(base_url, half_body),
        )
        served = await asyncio.gather(
            exchange(base_url, health[:10], health[10:30], health[30:], pause=0.1),
            exchange(base_url, request("GET", "/slow", close=True)),
            exchange(base_url, request("POST", "/tutorials", b'{"name": "in time"}', close=True)),
        )
        assert list(await stalled) == [b"", b"", b""]
        assert time.monotonic() - started < 5  # closed by the server, not by our 5 s wait
    assert [answer.split(b"\r\n")[0] for answer in served] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 201 Created",
    ]

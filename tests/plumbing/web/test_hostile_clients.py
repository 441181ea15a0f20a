"""The service as production runs it (`python -m <package>.core.serve`: uvicorn, httptools, the
client limits) against hostile clients and a database having a bad day: every answer as it
should be, memory and other clients' latency bounded, and nothing logged as an error."""

import asyncio
import contextlib
import os
import random
import signal
import socket
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.core.migrations import migrate
from {{ cookiecutter.project_slug }}.core.observability import METHODS, OTHER_METHOD, UNMATCHED

from ..conftest import settings_for
from ..servers import free_port
from .test_serve import Serving, serve

# Methods llhttp parses (any other is a 400 before the app): each would be a label of its own.
ODD_METHODS = ("PURGE", "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT")


def errors_logged(server: Serving) -> list[str]:
    """The server's ERROR and CRITICAL lines (JSON: serve logs JSON when not on a terminal)
    and tracebacks."""
    levels = ('"level": "ERROR"', '"level": "CRITICAL"', "Traceback")
    return [line for line in server.lines if any(level in line for level in levels)]


def rss_mb(pid: int) -> float:
    """The process's resident memory, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time the process's main thread has run, in seconds (nanoseconds from schedstat;
    the server is one thread)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def answer(reader: asyncio.StreamReader, head: bool = False) -> Answer:
    """One HTTP/1.1 answer from `reader` (a body by Content-Length; none for HEAD)."""
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines if line)
    length = 0 if head else int(headers.get("content-length", 0))
    return Answer(int(status_line.split()[1]), headers, await reader.readexactly(length))


@asynccontextmanager
async def connection(
    base_url: str, receive_buffer: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    """A connection to the server (with a kernel receive buffer of `receive_buffer` bytes)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting: it sets the window the server sees
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        yield reader, writer
    finally:
        writer.close()


async def exchange(reader: asyncio.StreamReader, writer: Any, method: str, path: str) -> Answer:
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return await answer(reader, head=method == "HEAD")


class Latency:
    """Normal requests, one after another on one connection, for as long as it runs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seconds: list[float] = []
        self.failed = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            while True:
                started = time.monotonic()
                try:
                    ok = (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.seconds.append(time.monotonic() - started)
                self.failed += not ok
                await asyncio.sleep(0.05)


@asynccontextmanager
async def measured(server: Serving) -> AsyncIterator[Latency]:
    """Normal requests' latency while the block runs."""
    latency = Latency(server.base_url)
    task = asyncio.create_task(latency.run())
    try:
        yield latency
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_head_is_answered_like_get_without_a_body_on_a_kept_connection() -> None:
    """HEAD of every GET route: GET's status and headers (Content-Length included), no body,
    the connection kept for the next request, nothing logged as an error (uvicorn once logged
    two tracebacks per HEAD and dropped the connection)."""
    async with serve() as server, connection(server.base_url) as (reader, writer):
        for path in ("/health", "/ready", "/tutorials", "/tutorials/1", "/tutorials/x"):
            get = await exchange(reader, writer, "GET", path)
            head = await exchange(reader, writer, "HEAD", path)
            assert (head.status, head.body) == (get.status, b""), path
            assert head.headers["content-length"] == get.headers["content-length"], path
            assert head.headers["content-type"] == get.headers["content-type"], path
        assert (await exchange(reader, writer, "GET", "/health")).status == 200
    assert errors_logged(server) == []
    assert '"method": "HEAD", "route": "/tutorials/{tutorial_id}"' in server.log


async def test_unread_pipelined_answers_hold_no_memory_and_delay_nobody() -> None:
    """Ten connections pipeline thousands of requests each and never read an answer: the
    server parses one request ahead at a time, stops reading once the kernel takes no more of
    its answers, and disconnects each such client REQUEST_TIMEOUT later; its memory stays
    flat, and a normal client is served as before (uvicorn alone took 1.4 GB and its normal
    clients' p50 was 2.3 s)."""
    # The OpenAPI document: answers of some kB fill the kernel's buffers after a few hundred.
    requests = b"GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n" * 2000

    def pipeline(base_url: str) -> float:
        """Write until the server stops reading; the seconds until it disconnected us."""
        host, port = base_url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            # A small receive window, as a client that reads nothing soon has: the server's
            # answers stall after a few kB instead of filling megabytes of kernel buffers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.settimeout(1)
            with contextlib.suppress(TimeoutError):
                for _ in range(100):  # 200,000 requests at most
                    sock.sendall(requests)
            stopped = time.monotonic()
            # No answer is read: a write finds out when the server has given up on us.
            with contextlib.suppress(ConnectionError):
                for _ in range(300):
                    time.sleep(0.1)
                    with contextlib.suppress(TimeoutError):
                        sock.send(b"\r\n")  # an empty line between requests: allowed
            return time.monotonic() - stopped

    async with serve(REQUEST_TIMEOUT="3") as server, measured(server) as latency:
        await asyncio.sleep(0.5)
        before, peak = rss_mb(server.process.pid), 0.0
        attacks = asyncio.gather(*(asyncio.to_thread(pipeline, server.base_url) for _ in range(10)))
        while not attacks.done():
            peak = max(peak, rss_mb(server.process.pid))
            await asyncio.sleep(0.1)
        disconnected_after = await attacks
    p50 = statistics.median(latency.seconds)
    print(f"RSS {before:.0f} -> peak {peak:.0f} MB; normal requests' p50 {p50 * 1000:.1f} ms")
    assert peak - before < 50
    assert max(disconnected_after) < 3 + 5
    assert server.log.count("the client read no answer for 3 s: disconnected") == 10
    assert latency.failed == 0
    assert p50 < 0.5
    assert errors_logged(server) == []


async def test_a_header_section_over_the_limit_is_431_within_a_second() -> None:
    """Header fields over REQUEST_MAX_HEADER_BYTES (32 kB): 431 and the connection closed,
    whether they arrived whole or never end; 30 kB are served. Twenty connections streaming
    endless headers leave the memory flat (httptools alone buffered 50 MB each)."""

    async def send_fields(count: int) -> bytes:
        """A request with `count` header fields of 1,000 bytes: the whole answer."""
        fields = b"".join(b"X-Field-%03d: %s\r\n" % (n, b"v" * 986) for n in range(count))
        async with connection(server.base_url) as (reader, writer):
            head = b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            writer.write(head + fields + b"\r\n")
            return await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes

    def endless(seconds: float) -> tuple[float, bytes]:
        """A header value sent 64 kB at a time: the seconds until the server answered, and its
        answer."""
        host, port = server.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Endless: ")
            started = time.monotonic()
            sock.settimeout(0.05)
            while time.monotonic() - started < seconds:
                try:
                    sock.sendall(b"a" * 65536)
                except TimeoutError:
                    pass
                except ConnectionError:
                    break
                with contextlib.suppress(TimeoutError, ConnectionError):
                    if answered := sock.recv(4096):
                        return time.monotonic() - started, answered
            return time.monotonic() - started, b""

    async with serve() as server, measured(server) as latency:
        assert (await send_fields(30)).startswith(b"HTTP/1.1 200 ")
        refused = await send_fields(40)
        assert refused.startswith(b"HTTP/1.1 431 ")
        assert refused.endswith(b'{"detail": "request header fields over 32768 bytes"}')
        before = rss_mb(server.process.pid)
        streams = await asyncio.gather(*(asyncio.to_thread(endless, 5) for _ in range(20)))
        peak = rss_mb(server.process.pid)
    assert all(answer.startswith(b"HTTP/1.1 431 ") for _, answer in streams)
    assert max(seconds for seconds, _ in streams) < 1
    assert peak - before < 30
    assert latency.failed == 0
    assert errors_logged(server) == []


def series(exposition: str) -> dict[str, float]:
    """Prometheus text parsed by prometheus-client's parser: `name{labels}` -> value."""
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def test_metrics_are_served_on_their_own_port_only() -> None:
    """The public port has no /metrics (nor /%6detrics); METRICS_PORT has, for GET and HEAD
    only. Whatever methods and paths clients send, the labels stay bounded: unknown paths
    are `unmatched`, unknown methods `other`, so the scrape stays small."""
    metrics_port = free_port()
    async with (
        serve(METRICS_PORT=str(metrics_port)) as server,
        httpx.AsyncClient(base_url=server.base_url) as public,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as metrics,
    ):
        assert (await public.get("/metrics")).status_code == 404
        assert (await public.get("/%6detrics")).status_code == 404
        scraped = await metrics.get("/metrics")
        assert scraped.status_code == 200
        head = await metrics.head("/metrics")
        assert (head.status_code, head.content) == (200, b"")
        refused = await metrics.post("/metrics")
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
        assert (await metrics.get("/elsewhere")).status_code == 404
        sizes = []
        for _ in range(2):
            for _ in range(300):
                method = random.choice((*ODD_METHODS, "GET", "POST", "DELETE"))
                path = f"/{random.randrange(10**9)}/{random.choice(('tutorials', 'x'))}"
                await public.request(method, path)
            sizes.append(len((await metrics.get("/metrics")).content))
        labels = {
            (sample.labels.get("method"), sample.labels.get("route"))
            for family in text_string_to_metric_families((await metrics.get("/metrics")).text)
            for sample in family.samples
            if family.name == "http_requests"
        }
    assert {method for method, _ in labels} <= METHODS | {OTHER_METHOD}
    assert {route for _, route in labels} <= {UNMATCHED, "/tutorials", "/health"}
    assert sizes[1] - sizes[0] < 2000  # the second 300 made no new series
    assert errors_logged(server) == []


def hostile_bodies() -> dict[str, bytes]:
    """Request bodies under 1 MiB that cost the most to refuse, by what they hold."""
    budget = 1024 * 1024 - 64
    keys = b",".join(b'"k%d":0' % n for n in range(80_000))
    return {
        "80,000 extra keys": b'{"name":"x",' + keys + b"}",
        "an object of 80,000 keys": b'{"name":{' + keys + b"}}",
        "a list of 500,000 zeros": b'{"name":[' + b",".join([b"0"] * 500_000) + b"]}",
        "a list of 300,000 objects": b'{"name":[' + b",".join([b"{}"] * 300_000) + b"]}",
        "400,000 levels deep": b'{"name":' + b"[" * 400_000 + b"]" * 400_000 + b"}",
        "a 1 MB string": b'{"name":"' + b"x" * (budget - 16) + b'"}',
        "1 MB of escapes": b'{"name":"' + b"\\u00e9" * (budget // 6 - 4) + b'"}',
        "a number of 1,000,000 digits": b'{"name":' + b"1" * (budget - 16) + b"}",
    }


async def test_refusing_the_worst_body_costs_at_most_ten_normal_requests() -> None:
    """Each body under 1 MiB that is costly to validate is refused (413 when it has more
    than REQUEST_MAX_JSON_VALUES values, before it is parsed) for at most the server CPU of
    ten normal requests (80,000 extra keys once cost 248 of them)."""
    async with serve() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        pid = server.process.pid

        async def cpu_per_request(body: bytes, times: int) -> tuple[float, set[int]]:
            headers = {"content-type": "application/json"}
            started = cpu_seconds(pid)
            statuses = {
                (await client.post("/tutorials", content=body, headers=headers)).status_code
                for _ in range(times)
            }
            return (cpu_seconds(pid) - started) / times, statuses

        await cpu_per_request(b'{"name": "warm-up"}', 50)
        normal, _ = await cpu_per_request(b'{"name": "a normal name"}', 300)
        costs = {name: await cpu_per_request(body, 20) for name, body in hostile_bodies().items()}
    report = {name: f"{cost / normal:.1f}x {statuses}" for name, (cost, statuses) in costs.items()}
    print(f"a normal request: {normal * 1e6:.0f} µs of CPU; refusing", report)
    assert all(statuses <= {400, 413, 422} for _, statuses in costs.values()), report
    assert all(cost <= 10 * normal for cost, _ in costs.values()), report
    assert errors_logged(server) == []


@contextmanager
def frozen(server: Any) -> Iterator[None]:
    """The PostgreSQL server stopped in its tracks (SIGSTOP to the postmaster and every
    backend): connections open, nothing answered, as a hung host or a full stop of the VM."""
    postmaster = int((server.data_dir / "data" / "postmaster.pid").read_text().split()[0])
    children = [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if (fields := stat.read_text().rpartition(")")[2].split()) and int(fields[1]) == postmaster
    ]
    processes = [postmaster, *children]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.commits
async def test_a_frozen_database_is_503_within_the_command_timeout(
    own_server: tuple[Any, URL],
) -> None:
    """The database stops answering: every request, whether it holds a connection (the
    statement times out), waits for one (the pool times out) or opens one (connecting
    times out), is a 503 within DATABASE_COMMAND_TIMEOUT and a small margin, never hangs;
    once the database is back, requests succeed (a pool and connect timeout of 30 and 60 s
    once made the same requests wait 71 s)."""
    database, url = own_server
    environment = {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "DATABASE_MIGRATION_URL": "",  # one role on this server
        "MIGRATE_ON_STARTUP": "true",
        # The defaults (15, 10, 5) scaled down together: pool + connect = command.
        "DATABASE_COMMAND_TIMEOUT": "3",
        "DATABASE_POOL_TIMEOUT": "2",
        "DATABASE_CONNECT_TIMEOUT": "1",
        "DATABASE_POOL_SIZE": "4",
    }
    async with (
        serve(**environment) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
    ):

        async def timed(method: str, path: str) -> tuple[int, float]:
            started = time.monotonic()
            response = await client.request(method, path, json={"name": "while frozen"})
            assert response.status_code != 503 or response.headers["retry-after"] == "1"
            return response.status_code, time.monotonic() - started

        for _ in range(8):
            assert (await client.post("/tutorials", json={"name": "warm"})).status_code == 201
        with frozen(database):
            answers = await asyncio.gather(
                *(timed("POST", "/tutorials") for _ in range(12)),
                *(timed("GET", "/tutorials/1") for _ in range(4)),
            )
            late = await asyncio.gather(*(timed("POST", "/tutorials") for _ in range(4)))
        for _ in range(50):  # back: the pool opens new connections for the ones it dropped
            if (await client.post("/tutorials", json={"name": "after"})).status_code == 201:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("no write succeeded after the database came back")
    print("while frozen (status, seconds):", answers, late)
    assert {status for status, _ in answers + late} == {503}
    assert max(seconds for _, seconds in answers + late) < 3 + 1.5
    assert errors_logged(server) == []


# A row named 'disk full' fails as a full disk does; one named 'slow' takes 2 s to insert.
MISBEHAVE = (
    """CREATE OR REPLACE FUNCTION misbehave() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.name = 'disk full' THEN
        RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';
      END IF;
      IF NEW.name = 'slow' THEN PERFORM pg_sleep(2); END IF;
      RETURN NEW;
    END $$""",
    "CREATE OR REPLACE TRIGGER misbehave BEFORE INSERT ON tutorials"
    " FOR EACH ROW EXECUTE FUNCTION misbehave()",
)


@pytest.mark.commits
async def test_transient_database_conditions_are_503_never_500(
    own_server: tuple[Any, URL],
) -> None:
    """Against a real server, each condition a retry may outlast answers 503 with
    Retry-After, and the service recovers by itself once it is over: disk full, the server's
    statement_timeout, a schema change under cached statements, a primary turned read-only
    (the failover window: /ready says so, and reconnecting with target_session_attrs finds no
    writable host), connections killed. Nothing is logged as an error."""
    _, url = own_server
    await migrate(settings_for(url))
    query = {"target_session_attrs": "read-write", "options": "-c statement_timeout=500"}
    environment = {
        "DATABASE_URL": url.update_query_dict(query).render_as_string(hide_password=False),
        "DATABASE_MIGRATION_URL": "",
        "DATABASE_POOL_SIZE": "1",  # one connection: the one whose statements go stale
    }
    admin = create_engine(settings_for(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")

    async def run(*statements: str) -> None:
        async with admin.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))

    async with (
        serve(**environment) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
    ):
        answers: list[tuple[str, int]] = []

        async def ask(label: str, method: str, path: str, name: str = "") -> int:
            response = await client.request(method, path, json={"name": name or label})
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1", label
            answers.append((label, response.status_code))
            return response.status_code

        await run(*MISBEHAVE)
        created = await client.post("/tutorials", json={"name": "to read"})
        location = created.headers["location"]
        try:
            assert await ask("disk full", "POST", "/tutorials") == 503
            assert await ask("statement_timeout", "POST", "/tutorials", "slow") == 503
            assert await ask("after both", "POST", "/tutorials") == 201

            assert await ask("cached", "GET", location) == 200
            await run("ALTER TABLE tutorials ALTER COLUMN name TYPE text")
            assert await ask("stale statement, run again", "GET", location) == 200
            assert await ask("re-prepared", "GET", location) == 200

            await run(
                "ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"
            )
            await asyncio.sleep(0.5)  # the backends read the configuration again
            assert await ask("read-only primary", "POST", "/tutorials") == 503
            assert await ask("/ready, read-only", "GET", "/ready") == 503
            assert await ask("no writable host", "POST", "/tutorials") == 503
            await run("ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()")
            await asyncio.sleep(0.5)
            assert await ask("/ready, writable", "GET", "/ready") == 200
            assert await ask("writable again", "POST", "/tutorials") == 201

            await run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            assert await ask("connection killed", "POST", "/tutorials") in (201, 503)
            assert await ask("reconnected", "POST", "/tutorials") == 201
        finally:
            print(answers)
            await run(
                "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()",
                "SET default_transaction_read_only = off",
                "DROP TRIGGER IF EXISTS misbehave ON tutorials",
                "ALTER TABLE tutorials ALTER COLUMN name TYPE varchar(255)",
            )
            await admin.dispose()
    assert errors_logged(server) == []


@pytest.mark.commits
async def test_a_column_type_change_under_load_is_never_an_error(
    owner_engine: AsyncEngine,
) -> None:
    """Requests keep coming while a migration changes a column's type (and back): the cached
    statements that went stale are run again, so every request succeeds (asyncpg's cached
    plan "must not change result type" once made them 500s)."""
    async with owner_engine.begin() as connection:
        seed = await connection.scalar(
            text("INSERT INTO tutorials (name) VALUES ('typed') RETURNING tutorial_id")
        )
    statuses: list[int] = []
    async with serve() as server, httpx.AsyncClient(base_url=server.base_url) as client:

        async def user(number: int, until: float) -> None:
            while time.monotonic() < until:
                statuses.append((await client.get(f"/tutorials/{seed}")).status_code)
                created = await client.post("/tutorials", json={"name": f"typed {number}"})
                statuses.append(created.status_code)

        until = time.monotonic() + 4
        users = asyncio.gather(*(user(number, until) for number in range(8)))
        for new_type in ("text", "varchar(255)"):
            await asyncio.sleep(1)
            async with owner_engine.begin() as connection:
                await connection.execute(
                    text(f"ALTER TABLE tutorials ALTER COLUMN name TYPE {new_type}")
                )
        await users
    assert set(statuses) == {200, 201}, sorted(set(statuses))
    assert "a cached statement went stale" in server.log
    assert errors_logged(server) == []

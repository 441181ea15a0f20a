"""Benchmark a baked project's web service against the same endpoints on raw asyncpg, and
against the pattern popular FastAPI templates use.

Run inside a project baked with web_framework=fastapi, with its venv and its .env, the
database migrated (`make bench-web` does all of that):

    python benchmarks/web.py <package> [--rounds 3]

Five uvicorn servers (the same uvicorn options) run side by side: the service
(`<package>.web:app`) with one worker and with two; the peers' pattern (FastAPI,
`async_sessionmaker(expire_on_commit=False)`, a `get_db` dependency that yields a session and
commits after the handler; `session.add()` + `flush()`, `session.get()`) with the commit
before the response (`scope="function"`) and after it (FastAPI's default scope); and
`raw_app` below, a minimal ASGI app with the same two endpoints written directly on an
asyncpg pool. Every server gets the service's pool limits. A light keep-alive HTTP client
measures requests/s and latency for `POST /tutorials` and `GET /tutorials/{id}` at
concurrency 1, 64 and 200, the servers taking turns in short slices so all see the same
machine; each one-worker server also reports the database connections it opened (GET
/__connections). The table shows medians over the rounds, ratios to the floor and to the
peers' pattern. Then the statements the database ran per request of each route, from its own
statistics (pg_stat_statements): each one a round trip. The exit code is 1 when a printed
target is missed.

Then what observability costs: the service as above (no access lines, no metrics), beside
itself with JSON access lines, with JSON lines and metrics, and with both and OpenTelemetry
tracing into an exporter that drops the spans; a second table, ratios to the plain service,
at concurrency 1 and 64.
"""

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import random
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncpg

# Concurrency: requests per server per endpoint per round (the observability variants: the
# first two).
REQUESTS = {1: 400, 64: 3_200, 200: 3_200}
VARIANT_REQUESTS = {1: 400, 64: 3_200}
SLICES = 8  # each measurement runs in this many turns, the servers taking turns
RAW_DSN = "BENCH_RAW_DSN"  # how the raw app learns its database
# ... and its pool's limits, the service's own (settings: pool size, pool size + overflow).
RAW_POOL = "BENCH_RAW_POOL"
PACKAGE = "BENCH_PACKAGE"  # the baked package, for the service and the peers' pattern
# The service without observability: warnings only (no access line), no metrics, no tracing.
PLAIN = {"LOG_LEVEL": "WARNING", "METRICS_ENABLED": "false"}
# What each variant adds, side by side with the plain service. JSON lines go to /dev/null (the
# formatting and the write are measured, not a terminal's speed).
JSON_LINES = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
METRICS = {"METRICS_ENABLED": "true"}
SERVICE = "FastAPI service"
SERVICE_2 = "FastAPI service, 2 workers"
PEERS_BEFORE = "peers: get_db, commit before response"
PEERS_AFTER = "peers: get_db, commit after response"
RAW = "raw asyncpg"
# name: (the uvicorn app factory in this module, workers, environment overrides)
Servers = dict[str, tuple[str, int, dict[str, str]]]
SERVERS: Servers = {
    RAW: ("raw", 1, {}),
    SERVICE: ("service", 1, {}),
    SERVICE_2: ("service", 2, {}),
    PEERS_BEFORE: ("peers_commit_before_response", 1, {}),
    PEERS_AFTER: ("peers_commit_after_response", 1, {}),
}
VARIANTS: Servers = {
    "service": ("service", 1, {}),
    "+ JSON access lines": ("service", 1, JSON_LINES),
    "+ JSON lines + metrics": ("service", 1, JSON_LINES | METRICS),
    "+ JSON lines + metrics + tracing": ("traced_service", 1, JSON_LINES | METRICS),
    "without gc.freeze() at start-up": ("service_without_freeze", 1, {}),
}
TARGETS = [  # (server, reference, concurrency, minimum ratio of requests/s)
    (SERVICE, PEERS_BEFORE, 64, 1.8),
    (SERVICE, PEERS_BEFORE, 1, 1.4),
    (SERVICE, RAW, 64, 0.4),
]
# Beyond the pool (30), waiters are served in turn: the slowest requests wait little longer
# than the floor's.
P99_TARGETS = [(SERVICE, RAW, 200, 3.0)]  # (server, reference, concurrency, maximum ratio)
# A hot route's whole work is one statement: one round trip, no BEGIN or COMMIT around it.
ROUND_TRIPS = 1
COUNTED = (SERVICE, PEERS_BEFORE, RAW)  # the servers whose statements are counted
COUNTED_REQUESTS = 300

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# The database connections this server process opened (each server is a process of its own).
opened = 0


def count_connection(*_: object) -> None:
    global opened
    opened += 1


class Counting:
    """`app`, plus GET /__connections: how many database connections this process opened."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/__connections":
            await respond(send, 200, {"opened": opened})
            return
        await self.app(scope, receive, send)


def service() -> Counting:
    """The baked service, as `<package>.web:app` serves it."""
    from sqlalchemy import event

    package = os.environ[PACKAGE]
    app = importlib.import_module(f"{package}.web").app
    engine = importlib.import_module(f"{package}.core.database").get_engine()
    event.listen(engine.sync_engine, "connect", count_connection)
    return Counting(app)


def service_without_freeze() -> Counting:
    """The service without start-up's gc.freeze(): what settling the heap gains."""
    import gc

    gc.freeze = lambda: None
    return service()


def traced_service() -> Counting:
    """The service with OpenTelemetry tracing on, its spans batched to an exporter that drops
    them: the cost of tracing without a collector's."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    # Tracing is configured: the service instruments itself with the provider set above.
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"
    return service()


def peers(commit_before_response: bool) -> Counting:
    """The pattern popular FastAPI templates use, on the baked project's model and schemas."""
    from fastapi import Depends, FastAPI, HTTPException, Response
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

    package = os.environ[PACKAGE]
    models = importlib.import_module(f"{package}.models")
    schemas = importlib.import_module(f"{package}.schemas")
    min_size, max_size = map(int, os.environ[RAW_POOL].split(","))
    engine = create_async_engine(
        importlib.import_module(f"{package}.settings").get_settings().database_url_object,
        pool_size=min_size,
        max_overflow=max_size - min_size,
    )
    event.listen(engine.sync_engine, "connect", count_connection)
    session_local = async_sessionmaker(engine, expire_on_commit=False)

    async def get_db() -> AsyncIterator[AsyncSession]:
        async with session_local() as session:
            yield session
            await session.commit()

    scope = "function" if commit_before_response else "request"
    db_session = Annotated[AsyncSession, Depends(get_db, scope=scope)]
    app = FastAPI()

    @app.post("/tutorials", status_code=201, response_model=schemas.TutorialRead)
    async def create_tutorial(
        body: schemas.TutorialCreate, db: db_session, response: Response
    ) -> Any:
        tutorial = models.Tutorial(name=body.name)
        db.add(tutorial)
        await db.flush()
        response.headers["Location"] = f"/tutorials/{tutorial.tutorial_id}"
        return tutorial

    @app.get("/tutorials/{tutorial_id}", response_model=schemas.TutorialRead)
    async def read_tutorial(tutorial_id: int, db: db_session) -> Any:
        tutorial = await db.get(models.Tutorial, tutorial_id)
        if tutorial is None:
            raise HTTPException(404, "no such tutorial")
        return tutorial

    return Counting(app)


def peers_commit_before_response() -> Counting:
    return peers(commit_before_response=True)


def peers_commit_after_response() -> Counting:
    return peers(commit_before_response=False)


def raw() -> Counting:
    return Counting(raw_app)


# The floor: the two endpoints with nothing between HTTP and asyncpg but a dict lookup.
raw_pool: asyncpg.Pool | None = None


async def respond(send: Send, status: int, body: Any, *headers: tuple[bytes, bytes]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def counted_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    count_connection()
    return await asyncpg.connect(*args, **kwargs)


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    global raw_pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                min_size, max_size = map(int, os.environ[RAW_POOL].split(","))
                raw_pool = await asyncpg.create_pool(
                    os.environ[RAW_DSN],
                    min_size=min_size,
                    max_size=max_size,
                    connect=counted_connect,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                assert raw_pool is not None
                await raw_pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert raw_pool is not None
    method, path = scope["method"], scope["path"]
    if method == "POST" and path == "/tutorials":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        name = json.loads(body).get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            await respond(send, 422, {"detail": "name: 1 to 255 characters"})
            return
        async with raw_pool.acquire() as connection, connection.transaction():
            tutorial_id = await connection.fetchval(
                "INSERT INTO tutorials (name) VALUES ($1) RETURNING tutorial_id", name
            )
        location = (b"location", f"/tutorials/{tutorial_id}".encode())
        await respond(send, 201, {"tutorial_id": tutorial_id, "name": name}, location)
    elif method == "GET" and path.startswith("/tutorials/"):
        async with raw_pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT tutorial_id, name FROM tutorials WHERE tutorial_id = $1",
                int(path.rsplit("/", 1)[1]),
            )
        if row is None:
            await respond(send, 404, {"detail": "no such tutorial"})
        else:
            await respond(send, 200, dict(row))
    else:
        await respond(send, 404, {"detail": "not found"})


# The load: one keep-alive HTTP/1.1 connection per concurrent client, parsed minimally, so
# that the client spends as little of the shared CPUs as it can.
class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {len(body)}\r\n"
        if body:
            head += "content-type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        status = int(headers[9:12])
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


Request = Callable[[Connection, int], Awaitable[None]]
ENDPOINTS = ("POST /tutorials", "GET /tutorials/{id}")


async def post_tutorial(connection: Connection, number: int) -> None:
    status, _ = await connection.request("POST", "/tutorials", b'{"name": "bench %d"}' % number)
    assert status == 201, status


def get_tutorial(ids: list[int]) -> Request:
    async def get(connection: Connection, _: int) -> None:
        status, _ = await connection.request("GET", f"/tutorials/{random.choice(ids)}")
        assert status == 200, status

    return get


async def measure(
    connections: list[Connection], request: Request, count: int
) -> tuple[float, list[float]]:
    """Send `count` requests spread over `connections`: seconds taken, each latency."""
    latencies: list[float] = []
    numbers = iter(range(count))

    async def client(connection: Connection) -> None:
        for number in numbers:
            started = time.perf_counter()
            await request(connection, number)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(connection) for connection in connections))
    return time.perf_counter() - started, latencies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def uvicorn(factory: str, workers: int, environment: dict[str, str]) -> AsyncIterator[int]:
    """uvicorn serving this module's app `factory` with `workers` processes (uvicorn's warnings
    logged only; JSON lines go to /dev/null); yields its port once up."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", f"web:{factory}", "--factory"),
        *("--port", str(port), "--workers", str(workers), "--log-level", "warning"),
        "--app-dir",
        str(Path(__file__).parent),
        # Keep a server's idle connections open while the others take their turns.
        *("--timeout-keep-alive", "3600"),
        env=environment,
        stderr=asyncio.subprocess.DEVNULL if environment.get("LOG_FORMAT") == "json" else None,
    )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                connection = await Connection.open(port)
                await connection.close()
                break
            assert process.returncode is None, f"{factory} did not start"
            await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


# The benchmark's own server: room for every server's pools (6 x 30 with the defaults), and
# no WAL flush to wait for at COMMIT, whose jitter on a shared disk would drown the difference
# this measures (work between HTTP and the database); pg_stat_statements, where the server
# has it, counts the statements (BEGIN and COMMIT included) each request costs.
OWN_SERVER = {"max_connections": "250", "synchronous_commit": "off"}
COUNTING = {"shared_preload_libraries": "pg_stat_statements"}
STATEMENTS_RUN = """
    SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT LIKE '%pg_stat_statements%'
"""


def has_pg_stat_statements(servers: Any) -> bool:
    """Whether the server binaries the benchmark runs come with pg_stat_statements."""
    import subprocess

    bindir = servers.load_local_postgres().find_bindir()
    found = subprocess.run(
        [str(Path(bindir) / "pg_config"), "--pkglibdir"], capture_output=True, text=True
    )
    libdir = Path(found.stdout.strip()) if found.returncode == 0 else Path(bindir).parent / "lib"
    return any(libdir.glob("pg_stat_statements.*"))


async def benchmark(package: str, rounds: int) -> int:
    # Here, not at the top: uvicorn imports this module for the apps, which need neither.
    from data_layer import load_servers_module
    from pydantic import SecretStr
    from sqlalchemy.pool import NullPool

    settings_module = importlib.import_module(f"{package}.settings")
    settings = settings_module.get_settings()
    limits = (
        settings.database_pool_size,
        settings.database_pool_size + settings.database_max_overflow,
    )
    servers = load_servers_module()
    counting = has_pg_stat_statements(servers)
    own_server = OWN_SERVER | (COUNTING if counting else {})
    with servers.running_server("bench_web", "web", own_server) as (_, url):
        raw_url = url.render_as_string(hide_password=False)
        if counting:
            connection = await asyncpg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False)
            )
            await connection.execute("CREATE EXTENSION pg_stat_statements")
            await connection.close()
        own = settings_module.Settings(database_url=SecretStr(raw_url))
        engine = importlib.import_module(f"{package}.core.database").create_engine(
            own, poolclass=NullPool
        )
        await importlib.import_module(f"{package}.core.migrations").upgrade(engine)
        await engine.dispose()
        environment = {
            **os.environ,
            "DATABASE_URL": raw_url,
            RAW_DSN: url.set(drivername="postgresql").render_as_string(hide_password=False),
            RAW_POOL: ",".join(map(str, limits)),
            PACKAGE: package,
            **PLAIN,
        }
        counts: dict[tuple[str, str], float] = {}
        results = await serve_and_measure(
            SERVERS, environment, rounds, REQUESTS, counts if counting else None
        )
        status = report(results, rounds, limits, counts)
        report_variants(await serve_and_measure(VARIANTS, environment, rounds, VARIANT_REQUESTS))
    return status


async def statements_per_request(
    dsn: str, port: int, request: "Request", count: int = COUNTED_REQUESTS
) -> float:
    """What the database ran (pg_stat_statements' calls) per request of `request` to the
    server on `port`, while the others are idle: each statement is one round trip."""
    database = await asyncpg.connect(dsn)
    client = await Connection.open(port)
    try:
        await database.execute("SELECT pg_stat_statements_reset()")
        for number in range(count):
            await request(client, number)
        return float(await database.fetchval(STATEMENTS_RUN)) / count
    finally:
        await client.close()
        await database.close()


async def connections_opened(connection: Connection) -> int:
    """What the server behind `connection` says it opened (one-worker servers only)."""
    _, body = await connection.request("GET", "/__connections")
    return int(json.loads(body)["opened"])


@dataclass
class Slices:
    """One server's measurements of one endpoint at one concurrency in one round."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    opened: int = 0  # database connections opened meanwhile


Results = dict[tuple[str, int, str], list[Slices]]


async def serve_and_measure(
    servers: Servers,
    environment: dict[str, str],
    rounds: int,
    levels: dict[int, int],
    counts: dict[tuple[str, str], float] | None = None,
) -> Results:
    """Serve each of `servers` and measure them side by side at each concurrency of `levels`;
    with `counts`, count the statements per request of the COUNTED servers into it."""
    async with contextlib.AsyncExitStack() as stack:
        ports = {
            name: await stack.enter_async_context(
                uvicorn(factory, workers, environment | overrides)
            )
            for name, (factory, workers, overrides) in servers.items()
        }
        seed = await Connection.open(next(iter(ports.values())))
        ids = []
        for number in range(200):
            _, body = await seed.request("POST", "/tutorials", b'{"name": "seed %d"}' % number)
            ids.append(json.loads(body)["tutorial_id"])
        await seed.close()
        endpoints: dict[str, Request] = {
            "POST /tutorials": post_tutorial,
            "GET /tutorials/{id}": get_tutorial(ids),
        }
        results: Results = {}
        for round_number in range(rounds + 1):  # round 0 warms up pools and caches
            for concurrency, count in levels.items():
                pools = {
                    name: [await Connection.open(port) for _ in range(concurrency)]
                    for name, port in ports.items()
                }
                for endpoint, request in endpoints.items():
                    measured = {name: Slices() for name in servers}
                    for turn in range(SLICES):
                        for name in rotated(list(servers), round_number + turn):
                            counted = servers[name][1] == 1
                            before = await connections_opened(pools[name][0]) if counted else 0
                            seconds, latencies = await measure(
                                pools[name], request, count // SLICES
                            )
                            after = await connections_opened(pools[name][0]) if counted else 0
                            measured[name].seconds += seconds
                            measured[name].latencies += latencies
                            measured[name].opened += after - before
                    if round_number:
                        for name, slices in measured.items():
                            results.setdefault((endpoint, concurrency, name), []).append(slices)
                for connections in pools.values():
                    for connection in connections:
                        await connection.close()
            if round_number:
                print(f"round {round_number}/{rounds} done", file=sys.stderr)
        if counts is not None:
            for endpoint, request in endpoints.items():
                for name in COUNTED:
                    counts[(endpoint, name)] = await statements_per_request(
                        environment[RAW_DSN], ports[name], request
                    )
    return results


def rotated(names: list[str], by: int) -> list[str]:
    """`names` starting at another place each time, so no server always runs first."""
    return names[by % len(names) :] + names[: by % len(names)]


def summary(runs: list[Slices]) -> tuple[float, float, float, float]:
    """Median over rounds of requests/s, p50 and p99 latency (milliseconds), and database
    connections opened per 1,000 requests over all rounds."""
    rates, p50s, p99s = [], [], []
    for run in runs:
        cuts = statistics.quantiles(run.latencies, n=100)
        rates.append(len(run.latencies) / run.seconds)
        p50s.append(1000 * cuts[49])
        p99s.append(1000 * cuts[98])
    per_thousand = 1000 * sum(run.opened for run in runs) / sum(len(r.latencies) for r in runs)
    return (
        statistics.median(rates),
        statistics.median(p50s),
        statistics.median(p99s),
        per_thousand,
    )


def report(
    results: Results, rounds: int, limits: tuple[int, int], counts: dict[tuple[str, str], float]
) -> int:
    versions = {
        name: importlib.import_module(name).__version__
        for name in ("fastapi", "uvicorn", "asyncpg", "sqlalchemy")
    }
    print(
        f"Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
        + f"; {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs shared with the "
        f"client; one uvicorn worker per server unless named; pools of {limits[0]} + "
        f"{limits[1] - limits[0]} overflow on every server (per worker), against a PostgreSQL "
        f"of the benchmark's own (max_connections 250); synchronous_commit off; median of "
        f"{rounds} rounds.\n"
    )
    print(
        "| endpoint | concurrency | server | req/s | ratio to raw asyncpg "
        "| ratio to peers (commit before response) | p50 / p99 ms "
        "| connections opened / 1,000 requests |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for endpoint in ENDPOINTS:
        for concurrency in REQUESTS:
            raw = summary(results[(endpoint, concurrency, RAW)])
            peers = summary(results[(endpoint, concurrency, PEERS_BEFORE)])
            for name, (_, workers, _) in SERVERS.items():
                rate, p50, p99, opened = summary(results[(endpoint, concurrency, name)])
                connections = f"{opened:.1f}" if workers == 1 else "n/a"
                print(
                    f"| `{endpoint}` | {concurrency} | {name} | {rate:,.0f} "
                    f"| {rate / raw[0]:.2f} | {rate / peers[0]:.2f} | {p50:.1f} / {p99:.1f} "
                    f"| {connections} |"
                )
    print()
    if counts:
        print("| endpoint | server | statements run per request (pg_stat_statements) |")
        print("|---|---|---:|")
        for (endpoint, name), statements in counts.items():
            print(f"| `{endpoint}` | {name} | {statements:.2f} |")
        print(
            "\nEach statement is a round trip, but for raw asyncpg's pool reset on release: four"
            " statements in one message.\n"
        )
    failures = 0
    for endpoint in ENDPOINTS:
        for name, reference, concurrency, minimum in TARGETS:
            rate = summary(results[(endpoint, concurrency, name)])[0]
            ratio = rate / summary(results[(endpoint, concurrency, reference)])[0]
            verdict = "met" if ratio >= minimum else "MISSED"
            failures += verdict == "MISSED"
            print(
                f"target: {endpoint}, c={concurrency}: {name} / {reference} = {ratio:.2f} "
                f"(>= {minimum}): {verdict}"
            )
        for name, reference, concurrency, maximum in P99_TARGETS:
            p99 = summary(results[(endpoint, concurrency, name)])[2]
            ratio = p99 / summary(results[(endpoint, concurrency, reference)])[2]
            verdict = "met" if ratio <= maximum else "MISSED"
            failures += verdict == "MISSED"
            print(
                f"target: {endpoint}, c={concurrency}: p99 of {name} / {reference} = "
                f"{ratio:.2f} (<= {maximum}): {verdict}"
            )
        opened = summary(results[(endpoint, 64, SERVICE)])[3]
        verdict = "met" if opened == 0 else "MISSED"
        failures += verdict == "MISSED"
        print(
            f"target: {endpoint}, c=64: {SERVICE} opened {opened:.1f} connections per 1,000 "
            f"requests (0): {verdict}"
        )
        if (endpoint, SERVICE) not in counts:
            print(
                f"target: {endpoint}: round trips per request: not measured (no pg_stat_statements)"
            )
            continue
        trips = counts[(endpoint, SERVICE)]
        verdict = "met" if round(trips, 2) == ROUND_TRIPS else "MISSED"
        failures += verdict == "MISSED"
        print(
            f"target: {endpoint}: {SERVICE} round trips per request = {trips:.2f} "
            f"({ROUND_TRIPS}): {verdict}"
        )
    return 1 if failures else 0


def report_variants(results: Results) -> None:
    """The observability variants beside the plain service, POST first: the target is JSON
    lines + metrics at 0.9 or more of the plain service at concurrency 64."""
    print(
        "\n| endpoint | concurrency | variant | req/s | ratio to the service | p50 / p99 ms |"
        "\n|---|---:|---|---:|---:|---:|"
    )
    for endpoint in ENDPOINTS:
        for concurrency in VARIANT_REQUESTS:
            plain = summary(results[(endpoint, concurrency, "service")])
            for name in VARIANTS:
                rate, p50, p99, _ = summary(results[(endpoint, concurrency, name)])
                print(
                    f"| `{endpoint}` | {concurrency} | {name} | {rate:,.0f} "
                    f"| {rate / plain[0]:.2f} | {p50:.1f} / {p99:.1f} |"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the baked project's import package")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (at least 1)")
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    return asyncio.run(benchmark(arguments.package, arguments.rounds))


if __name__ == "__main__":
    sys.exit(main())

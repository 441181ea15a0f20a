"""Benchmark a baked project's web service against the same endpoints on raw asyncpg.

Run inside a project baked with web_framework=fastapi, with its venv and its .env, the
database migrated (`make bench-web` does all of that):

    python benchmarks/web.py <package> [--rounds 3]

Two uvicorn servers (one worker each, the same uvicorn options) run side by side: the
service (`<package>.web:app`) and `raw_app` below, a minimal ASGI app with the same two
endpoints written directly on an asyncpg pool of the service's size. A light keep-alive HTTP
client measures requests/s and latency for `POST /tutorials` and `GET /tutorials/{id}` at
concurrency 1 and 64, the two servers taking turns in short slices so both see the same
machine. The table shows medians over the rounds and the service's ratio to the floor.

Then what observability costs: the service as above (no access lines, no metrics), beside
itself with JSON access lines, with JSON lines and metrics, and with both and OpenTelemetry
tracing into an exporter that drops the spans; a second table, ratios to the plain service.
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
from pathlib import Path
from typing import Any

import asyncpg

REQUESTS = {1: 400, 64: 3_200}  # concurrency: requests per server per endpoint per round
SLICES = 8  # each measurement runs in this many turns, the servers taking turns
RAW_DSN = "BENCH_RAW_DSN"  # how the raw app learns its database
# ... and its pool's limits, the service's own (settings: pool size, pool size + overflow).
RAW_POOL = "BENCH_RAW_POOL"
# The package whose service `traced_service` builds.
PACKAGE = "BENCH_PACKAGE"
# The service without observability: warnings only (no access line), no metrics, no tracing.
PLAIN = {"LOG_LEVEL": "WARNING", "METRICS_ENABLED": "false"}
# What each variant adds, side by side with the plain service. JSON lines go to /dev/null (the
# formatting and the write are measured, not a terminal's speed).
JSON_LINES = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
METRICS = {"METRICS_ENABLED": "true"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    global raw_pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                min_size, max_size = map(int, os.environ[RAW_POOL].split(","))
                raw_pool = await asyncpg.create_pool(
                    os.environ[RAW_DSN], min_size=min_size, max_size=max_size
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


def traced_service() -> Any:
    """The service with OpenTelemetry tracing on, its spans batched to an exporter that drops
    them: the cost of tracing without a collector's (`uvicorn --factory`)."""
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
    return importlib.import_module(f"{os.environ[PACKAGE]}.web").app


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
async def uvicorn(app: str, environment: dict[str, str]) -> AsyncIterator[int]:
    """A one-worker uvicorn serving `app` (uvicorn's warnings logged only; JSON lines go to
    /dev/null); yields its port once up."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"),
        "--app-dir",
        str(Path(__file__).parent),
        # Keep a server's idle connections open while the other server takes its turn.
        *("--timeout-keep-alive", "3600"),
        *(["--factory"] if app.endswith(":traced_service") else []),
        env=environment,
        stderr=asyncio.subprocess.DEVNULL if environment.get("LOG_FORMAT") == "json" else None,
    )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                connection = await Connection.open(port)
                await connection.close()
                break
            assert process.returncode is None, f"{app} did not start"
            await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


async def benchmark(package: str, rounds: int) -> None:
    # Here, not at the top: uvicorn imports this module for the raw app, which needs no ORM.
    from data_layer import set_synchronous_commit

    settings = importlib.import_module(f"{package}.settings").get_settings()
    dsn = settings.database_url_object.set(drivername="postgresql")
    limits = (
        settings.database_pool_size,
        settings.database_pool_size + settings.database_max_overflow,
    )
    environment = {
        **os.environ,
        RAW_DSN: dsn.render_as_string(hide_password=False),
        RAW_POOL: ",".join(map(str, limits)),
        PACKAGE: package,
        **PLAIN,
    }
    service = f"{package}.web:app"
    servers = {"raw asyncpg": ("web:raw_app", {}), "FastAPI service": (service, {})}
    # Four servers at most: each keeps its pool open (20), and PostgreSQL's default
    # max_connections is 100.
    variants = {
        "service": (service, {}),
        "+ JSON access lines": (service, JSON_LINES),
        "+ JSON lines + metrics": (service, JSON_LINES | METRICS),
        "+ JSON lines + metrics + tracing": ("web:traced_service", JSON_LINES | METRICS),
    }
    # Both servers wait for the same WAL flush at each COMMIT; on a shared disk its jitter
    # would drown the difference this measures (work between HTTP and the database).
    await set_synchronous_commit(environment[RAW_DSN], "off")
    try:
        results = await serve_and_measure(servers, environment, rounds)
        report(results, rounds)
        results = await serve_and_measure(variants, environment, rounds)
        report_variants(results)
    finally:
        await set_synchronous_commit(environment[RAW_DSN], "DEFAULT")


Results = dict[tuple[str, int, str], list[tuple[float, list[float]]]]


async def serve_and_measure(
    servers: dict[str, tuple[str, dict[str, str]]], environment: dict[str, str], rounds: int
) -> Results:
    """Serve each of `servers` (app, environment overrides) and measure them side by side."""
    async with contextlib.AsyncExitStack() as stack:
        ports = {
            name: await stack.enter_async_context(uvicorn(app, environment | overrides))
            for name, (app, overrides) in servers.items()
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
            for concurrency, count in REQUESTS.items():
                pools = {
                    name: [await Connection.open(port) for _ in range(concurrency)]
                    for name, port in ports.items()
                }
                for endpoint, request in endpoints.items():
                    spent = dict.fromkeys(servers, 0.0)
                    latencies: dict[str, list[float]] = {name: [] for name in servers}
                    for turn in range(SLICES):
                        order = list(servers) if (round_number + turn) % 2 else list(servers)[::-1]
                        for name in order:
                            seconds, measured = await measure(pools[name], request, count // SLICES)
                            spent[name] += seconds
                            latencies[name] += measured
                    if round_number:
                        for name in servers:
                            key = (endpoint, concurrency, name)
                            results.setdefault(key, []).append((spent[name], latencies[name]))
                for connections in pools.values():
                    for connection in connections:
                        await connection.close()
            if round_number:
                print(f"round {round_number}/{rounds} done", file=sys.stderr)
    return results


def summary(runs: list[tuple[float, list[float]]]) -> tuple[float, float, float]:
    """Median over rounds of requests/s, p50 and p99 latency (milliseconds)."""
    rates, p50s, p99s = [], [], []
    for seconds, latencies in runs:
        cuts = statistics.quantiles(latencies, n=100)
        rates.append(len(latencies) / seconds)
        p50s.append(1000 * cuts[49])
        p99s.append(1000 * cuts[98])
    return statistics.median(rates), statistics.median(p50s), statistics.median(p99s)


def report(results: Results, rounds: int) -> None:
    versions = {
        name: importlib.import_module(name).__version__
        for name in ("fastapi", "uvicorn", "asyncpg", "sqlalchemy")
    }
    print(
        f"Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
        + f"; {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs shared with the "
        f"client; one uvicorn worker per server; synchronous_commit off; median of {rounds} "
        "rounds.\n"
    )
    print(
        "| endpoint | concurrency | raw asyncpg req/s | FastAPI req/s | ratio "
        "| raw p50 / p99 ms | FastAPI p50 / p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for endpoint in ("POST /tutorials", "GET /tutorials/{id}"):
        for concurrency in REQUESTS:
            raw = summary(results[(endpoint, concurrency, "raw asyncpg")])
            service = summary(results[(endpoint, concurrency, "FastAPI service")])
            print(
                f"| `{endpoint}` | {concurrency} | {raw[0]:,.0f} | {service[0]:,.0f} "
                f"| {service[0] / raw[0]:.2f} | {raw[1]:.1f} / {raw[2]:.1f} "
                f"| {service[1]:.1f} / {service[2]:.1f} |"
            )


def report_variants(results: Results) -> None:
    """The observability variants beside the plain service, POST first: the target is JSON
    lines + metrics at 0.9 or more of the plain service at concurrency 64."""
    print(
        "\n| endpoint | concurrency | variant | req/s | ratio to the service | p50 / p99 ms |"
        "\n|---|---:|---|---:|---:|---:|"
    )
    names = list(dict.fromkeys(name for _, _, name in results))  # in serving order
    for endpoint in ("POST /tutorials", "GET /tutorials/{id}"):
        for concurrency in REQUESTS:
            plain = summary(results[(endpoint, concurrency, names[0])])
            for name in names:
                rate, p50, p99 = summary(results[(endpoint, concurrency, name)])
                print(
                    f"| `{endpoint}` | {concurrency} | {name} | {rate:,.0f} "
                    f"| {rate / plain[0]:.2f} | {p50:.1f} / {p99:.1f} |"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the baked project's import package")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 1)")
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    asyncio.run(benchmark(arguments.package, arguments.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

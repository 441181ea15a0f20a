"""Hostile probes against a baked project's production server: figures to compare before and
after a change to the template.

Run inside a project baked with web_framework=fastapi, with its venv and its .env, the
database running and migrated (`make db migrate`):

    python benchmarks/hostile.py <package> [--only head pipeline ...] [--keep-logs]

Each attack gets a fresh `python -m <package>.core.serve` on a free port of 127.0.0.1 (JSON lines
at INFO, metrics on, its stderr in a temporary file). Meanwhile a process of its own plays
four normal clients (POST /tutorials, then GET /tutorials/{id}, in a loop, one keep-alive
connection each), whose latency and failures are reported beside the attack. The attacks, each
bounded to about 15 s:

- quiet: the normal clients alone for 5 s, the reference for the others.
- head: 16 keep-alive connections sending HEAD /health and HEAD /tutorials/1 for 5 s: the
  answers, their status lines, the connections the server dropped, what it logged.
- pipeline: 10 connections each writing 100,000 pipelined GET /health as fast as the socket
  takes them, never reading an answer; held open until 15 s.
- headers: (a) one request with a 100 MiB header value: time until the server answers or
  closes, its CPU meanwhile; (b) 20 connections each sending an unfinished 50 MiB header.
- metrics: 2,000 requests with random paths and methods, then /metrics and /%6detrics on the
  public port and the metrics port (METRICS_PORT, else 9464) if the server listens there;
  then the normal clients while 20 scrapers hit /metrics for 5 s.
- body: POST /tutorials with hostile JSON bodies under 1 MiB, 10 of each: status and server
  CPU per request, as a ratio to a normal body's (500 requests). No normal clients here: they
  would spend the CPU measured.
- frozen: the database's postmaster and all its children get SIGSTOP for 20 s (SIGCONT in a
  `finally`): when the normal clients get their first 503, the longest wait for any answer.

For every attack: the server's RSS (/proc/<pid>/status VmRSS) before, at its peak (sampled
every 0.2 s) and 5 s after the attack ended; its CPU (/proc/<pid>/stat utime + stime); the
bytes it logged and its lines at ERROR or with a traceback. All traffic goes to 127.0.0.1.
Tables are printed as each attack ends; the exit code is 0 (these are measurements, not
targets).
"""

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import multiprocessing
import os
import platform
import queue
import random
import re
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The production configuration the probes are about; drain and grace shortened only so that the
# restart between attacks is quick (serve.py's shutdown timing, not measured here).
SERVER_ENVIRONMENT = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "METRICS_ENABLED": "true",
    "SHUTDOWN_DRAIN_SECONDS": "0",
    "SHUTDOWN_GRACE_SECONDS": "2",
}
ERROR_LINE = re.compile(rb'"level":\s*"(?:ERROR|CRITICAL)"')
NORMAL_CLIENTS = 4
# Long enough for any answer the server gives a frozen database (its pool and command
# timeouts are below 60 s), so that the client never gives up first.
NORMAL_TIMEOUT = 60.0
RSS_SAMPLE_SECONDS = 0.2
SETTLE_SECONDS = 5.0  # RSS "after" is read this long after an attack ended
ATTACK_SECONDS = 15.0  # the most any attack's traffic lasts

Row = tuple[str, ...]
# A normal request: when it started (time.monotonic(), the same clock in every process),
# seconds to its answer, method, and the status or the name of the client's exception.
Record = tuple[float, float, str, int | str]


# -- the server and what /proc says about it ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of `pid`, MiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU `pid` has used, seconds."""
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        # After the command name (in parentheses, may hold spaces): state is field 3, utime 14.
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


class Server:
    """`python -m <package>.core.serve` on a free port of 127.0.0.1, its output in a file."""

    def __init__(self, package: str, keep_log: bool) -> None:
        self.package, self.keep_log = package, keep_log
        self.port = free_port()
        log, self.log = tempfile.mkstemp(prefix="hostile-", suffix=".log")
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    f"{package}.core.serve",
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                ],
                env=os.environ | SERVER_ENVIRONMENT,
                stdout=log,
                stderr=log,
            )
        finally:
            os.close(log)  # the server has its own copy
        self.pid = self.process.pid  # `python -m` is the server itself: no wrapper process

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = Path(self.log).read_bytes()[-2000:].decode(errors="replace")
                raise SystemExit(f"the server exited ({self.process.returncode}):\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: hostile\r\nConnection: close\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
            time.sleep(0.1)
        raise SystemExit("the server did not answer /health within 30 s")

    def stop(self) -> None:
        # SIGINT: uvicorn's Ctrl+C, which skips serve.py's drain.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.keep_log:
            os.unlink(self.log)

    def rss(self) -> float:
        return rss_mib(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def log_lines(self, pattern: bytes) -> int:
        """Lines of the log so far that contain `pattern` (a regular expression)."""
        compiled = re.compile(pattern)
        with open(self.log, "rb") as log:
            return sum(1 for line in log if compiled.search(line))

    def rows(self) -> list[Row]:
        """What the server logged so far, and whether it is still running."""
        size = os.path.getsize(self.log)
        with open(self.log, "rb") as log:
            lines = errors = tracebacks = 0
            for line in log:
                lines += 1
                errors += bool(ERROR_LINE.search(line))
                tracebacks += b"Traceback" in line
        exit_code = self.process.poll()
        state = "running" if exit_code is None else f"EXITED ({exit_code})"
        return [
            ("server log", f"{size:,} B in {lines:,} lines"),
            ("log lines at ERROR / with a traceback", f"{errors:,} / {tracebacks:,}"),
            ("server process", state),
        ]


@contextlib.contextmanager
def serving(package: str, keep_log: bool) -> Iterator[Server]:
    """A fresh server for one attack, stopped after it."""
    server = Server(package, keep_log)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()
        if keep_log:
            print(f"(server log kept: {server.log})", file=sys.stderr)


# -- the normal clients, in a process of their own ---------------------------------------------
# Their own process, so that their latency is the server's, not this process's event loop busy
# writing an attack.


def normal_stream(
    port: int, stop: Event, ready: Event, results: "queue.Queue[list[Record]]"
) -> None:
    """Entry point of the normal clients' process: their records, once `stop` is set."""
    results.put(asyncio.run(normal_clients(port, stop, ready)))


async def normal_clients(port: int, stop: Event, ready: Event) -> list[Record]:
    records: list[Record] = []
    warmed = 0

    async def client(number: int) -> None:
        nonlocal warmed
        tutorial_id: int | None = None
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}", timeout=NORMAL_TIMEOUT, limits=limits
        ) as http:
            for count in range(sys.maxsize):
                if stop.is_set():
                    return
                for method in ("POST", "GET"):
                    started = time.monotonic()
                    outcome: int | str
                    try:
                        if method == "POST":
                            body = {"name": f"normal {number}.{count}"}
                            response = await http.post("/tutorials", json=body)
                            if response.status_code == 201:
                                tutorial_id = response.json()["tutorial_id"]
                        elif tutorial_id is not None:
                            response = await http.get(f"/tutorials/{tutorial_id}")
                        else:
                            continue  # no tutorial created yet to read
                        outcome = response.status_code
                    except httpx.HTTPError as error:
                        outcome = type(error).__name__
                    records.append((started, time.monotonic() - started, method, outcome))
                if count == 0:
                    warmed += 1
                    if warmed == NORMAL_CLIENTS:
                        ready.set()

    await asyncio.gather(*(client(number) for number in range(NORMAL_CLIENTS)))
    return records


@contextlib.asynccontextmanager
async def normal_traffic(port: int) -> AsyncIterator[list[Record]]:
    """The normal clients against `port` for the duration of the block (started and warmed up
    before it); yields the list their records are added to when the block ends."""
    context = multiprocessing.get_context("spawn")  # no fork of a process running a loop
    stop, ready, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=normal_stream, args=(port, stop, ready, results), daemon=True)
    process.start()
    await asyncio.to_thread(ready.wait, 20)
    records: list[Record] = []
    try:
        yield records
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            records += await asyncio.to_thread(results.get, True, NORMAL_TIMEOUT + 15)
        process.join(5)
        if process.is_alive():
            process.kill()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * fraction + 0.999999) - 1))]


def succeeded(outcome: int | str) -> bool:
    return isinstance(outcome, int) and outcome < 400


def outcomes(values: list[int | str]) -> str:
    """`{201: 30, 503: 2}` as "201 x30, 503 x2", most frequent first."""
    return ", ".join(f"{value} x{count}" for value, count in Counter(values).most_common()) or "-"


def normal_rows(records: list[Record]) -> list[Row]:
    if not records:
        return [("normal requests", "none completed")]
    milliseconds = [1000 * seconds for _, seconds, _, _ in records]
    failed = [outcome for *_, outcome in records if not succeeded(outcome)]
    return [
        ("normal requests", f"{len(records):,}"),
        (
            "normal latency p50 / p99 / max",
            f"{percentile(milliseconds, 0.5):.1f} / {percentile(milliseconds, 0.99):.1f} / "
            f"{max(milliseconds):.1f} ms",
        ),
        ("normal requests failed", f"{len(failed):,} ({outcomes(failed)})" if failed else "0"),
    ]


# -- an attack's window: RSS, CPU, the normal clients --------------------------------------------


@dataclass
class Window:
    """What one attack did to the server, measured around it."""

    server: Server
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    cpu: float = 0.0
    seconds: float = 0.0
    normal: bool = True
    records: list[Record] = field(default_factory=list)

    def rows(self) -> list[Row]:
        rows: list[Row] = [
            (
                "server RSS before / peak / 5 s after",
                f"{self.rss_before:.0f} / {self.rss_peak:.0f} / {self.rss_after:.0f} MiB",
            ),
            ("server CPU during", f"{self.cpu:.2f} s in {self.seconds:.1f} s"),
        ]
        return rows + (normal_rows(self.records) if self.normal else [])


@contextlib.asynccontextmanager
async def window(server: Server, normal: bool = True) -> AsyncIterator[Window]:
    """Measure the server around the block: RSS before, at its peak and 5 s after the block,
    CPU during; the normal clients' requests alongside (when `normal`)."""
    measured = Window(server, rss_before=server.rss(), normal=normal)
    measured.rss_peak = measured.rss_before
    done = threading.Event()

    def sample() -> None:  # a thread: sampling goes on while the event loop is busy attacking
        while not done.wait(RSS_SAMPLE_SECONDS):
            measured.rss_peak = max(measured.rss_peak, server.rss())

    sampler = threading.Thread(target=sample, daemon=True)
    async with contextlib.AsyncExitStack() as stack:
        if normal:
            measured.records = await stack.enter_async_context(normal_traffic(server.port))
        sampler.start()
        cpu, started = server.cpu(), time.monotonic()
        try:
            yield measured
        finally:
            measured.cpu, measured.seconds = server.cpu() - cpu, time.monotonic() - started
            done.set()
            sampler.join()
            measured.rss_peak = max(measured.rss_peak, server.rss())
    # The clients' warm-up is not the attack's: only what was still waiting when it began.
    measured.records[:] = [record for record in measured.records if sum(record[:2]) >= started]
    await asyncio.sleep(SETTLE_SECONDS)
    measured.rss_after = server.rss()


def print_table(title: str, rows: list[Row], header: Row = ("figure", "value")) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\n### {title} (load average {load})\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


# -- raw HTTP/1.1, for what a polite client would not send ---------------------------------------


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=MIB), 5)


def drop(writer: asyncio.StreamWriter) -> None:
    """Close at once, unsent data discarded (close() would wait for a peer that never reads)."""
    writer.transport.abort()


def dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


async def fetch(port: int, target: str, method: str = "GET") -> tuple[int | str, bytes]:
    """One request on a connection of its own, as written: (status or what went wrong, body)."""
    try:
        reader, writer = await connect(port)
    except OSError as error:
        return type(error).__name__, b""
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: hostile\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        data = await asyncio.wait_for(reader.read(-1), 30)
    except (OSError, TimeoutError) as error:
        return type(error).__name__, b""
    finally:
        drop(writer)
    headers, _, body = data.partition(b"\r\n\r\n")
    if not headers.startswith(b"HTTP/1."):
        return "no answer", b""
    if b"transfer-encoding: chunked" in headers.lower():
        body = dechunk(body)
    return int(headers.split()[1]), body


# -- the attacks ---------------------------------------------------------------------------------


async def attack_quiet(server: Server) -> list[Row]:
    async with window(server) as measured:
        await asyncio.sleep(5)
    return measured.rows()


HEAD_PATHS = ("/health", "/tutorials/1")


@dataclass
class HeadTally:
    statuses: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    dropped: int = 0  # closed or reset by the server while we were still asking
    stalled: int = 0  # no answer head within 5 s
    garbled: int = 0  # bytes where a status line should be: a body sent after a HEAD


async def head_connection(port: int, deadline: float, tally: HeadTally) -> None:
    while time.monotonic() < deadline:
        try:
            reader, writer = await connect(port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        tally.connections += 1
        # The path alternates per request, and per connection for its first request: each
        # path is asked on fresh connections and on ones that answered the other.
        number = tally.connections
        try:
            while time.monotonic() < deadline:
                path = HEAD_PATHS[number % len(HEAD_PATHS)]
                number += 1
                writer.write(f"HEAD {path} HTTP/1.1\r\nHost: hostile\r\n\r\n".encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                if not status_line.startswith("HTTP/1."):
                    tally.garbled += 1
                    break
                tally.statuses[f"{path}: {status_line}"] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            tally.dropped += 1
        except TimeoutError:
            tally.stalled += 1
        except asyncio.LimitOverrunError:
            tally.garbled += 1
        finally:
            drop(writer)


async def attack_head(server: Server) -> list[Row]:
    tally = HeadTally()
    async with window(server) as measured:
        deadline = time.monotonic() + 5
        await asyncio.gather(*(head_connection(server.port, deadline, tally) for _ in range(16)))
    statuses = "; ".join(f"{line} x{count:,}" for line, count in tally.statuses.most_common())
    return [
        ("HEAD answers received", f"{sum(tally.statuses.values()):,} in 5 s"),
        ("status lines", statuses or "-"),
        ("connections opened", f"{tally.connections:,}"),
        ("connections dropped by the server", f"{tally.dropped:,}"),
        ("connections with no answer in 5 s", f"{tally.stalled:,}"),
        ("answers with bytes before the status line", f"{tally.garbled:,}"),
        *measured.rows(),
    ]


PIPELINED = b"GET /health HTTP/1.1\r\nHost: hostile\r\n\r\n"
PIPELINE_REQUESTS = 100_000
PIPELINE_BATCH = 1_000  # requests per write


@dataclass
class PipelineTally:
    written: int = 0  # requests the sockets accepted (not necessarily read by the server)
    finished: list[float] = field(default_factory=list)  # seconds to write all, per connection
    reset: int = 0


async def pipeline_connection(port: int, deadline: float, tally: PipelineTally) -> None:
    _, writer = await connect(port)  # never read: the answers pile up on the server's side
    started = time.monotonic()
    batch = PIPELINED * PIPELINE_BATCH
    try:
        for _ in range(PIPELINE_REQUESTS // PIPELINE_BATCH):
            writer.write(batch)
            await asyncio.wait_for(writer.drain(), max(0.001, deadline - time.monotonic()))
            tally.written += PIPELINE_BATCH
        tally.finished.append(time.monotonic() - started)
        # Hold the connection until the deadline: the server has the requests, no reader.
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        pass  # the server stopped reading: the socket took no more before the deadline
    except ConnectionError:
        tally.reset += 1
    finally:
        drop(writer)


async def attack_pipeline(server: Server) -> list[Row]:
    tally = PipelineTally()
    async with window(server) as measured:
        deadline = time.monotonic() + ATTACK_SECONDS
        await asyncio.gather(
            *(pipeline_connection(server.port, deadline, tally) for _ in range(10))
        )
    answered = server.log_lines(rb'"GET /health 200')
    finished = (
        f"{len(tally.finished)} of 10 (slowest {max(tally.finished):.1f} s)"
        if tally.finished
        else "0 of 10"
    )
    return [
        ("requests the sockets accepted", f"{tally.written:,} of {10 * PIPELINE_REQUESTS:,}"),
        ("connections that wrote all in 15 s", finished),
        ("connections reset by the server", f"{tally.reset}"),
        ("pipelined requests answered (access lines)", f"{answered:,}"),
        *measured.rows(),
    ]


async def send_header(
    writer: asyncio.StreamWriter,
    size: int,
    deadline: float,
    until: asyncio.Future[Any] | None = None,
    rss_cap: tuple[Server, float] | None = None,
) -> tuple[int, str]:
    """Write a header value of `size` bytes, 1 MiB at a time, until done, the deadline, an
    answer (`until`), or the server's RSS over the cap: (bytes the socket took, why it stopped)."""
    chunk, sent = b"a" * MIB, 0
    try:
        while sent < size:
            if until is not None and until.done():
                return sent, "answered"
            if rss_cap is not None and rss_cap[0].rss() > rss_cap[1]:
                return sent, "RSS cap"
            writer.write(chunk[: size - sent])
            await asyncio.wait_for(writer.drain(), max(0.001, deadline - time.monotonic()))
            sent += min(MIB, size - sent)
    except TimeoutError:
        return sent, "deadline"
    except ConnectionError as error:
        return sent, type(error).__name__
    return sent, "all sent"


async def first_answer(reader: asyncio.StreamReader, server: Server) -> tuple[float, float, str]:
    """When the server first answers or closes, its CPU then, and what it said."""
    try:
        line = (await reader.readline()).decode(errors="replace").strip() or "closed"
    except ConnectionError as error:
        line = type(error).__name__
    return time.monotonic(), server.cpu(), line


async def attack_huge_header(server: Server) -> list[Row]:
    size = 100 * MIB
    async with window(server) as measured:
        reader, writer = await connect(server.port)
        started, cpu = time.monotonic(), server.cpu()
        deadline = started + ATTACK_SECONDS
        answer = asyncio.ensure_future(first_answer(reader, server))
        writer.write(b"GET /health HTTP/1.1\r\nHost: hostile\r\nX-Huge: ")
        sent, stopped = await send_header(writer, size, deadline, until=answer)
        if stopped == "all sent":
            writer.write(b"\r\n\r\n")
        try:
            answered, answer_cpu, line = await asyncio.wait_for(
                answer, max(0.001, deadline - time.monotonic())
            )
            outcome = f"{line!r} after {answered - started:.2f} s"
            used = answer_cpu - cpu
        except TimeoutError:
            outcome, used = "no answer in 15 s", server.cpu() - cpu
        drop(writer)
    return [
        ("header sent", f"{sent / MIB:.0f} MiB of {size // MIB} MiB ({stopped})"),
        ("server's answer", outcome),
        ("server CPU until then", f"{used:.2f} s"),
        *measured.rows(),
    ]


async def attack_unfinished_headers(server: Server) -> list[Row]:
    size, count = 50 * MIB, 20
    # Stop feeding a server that has taken half the machine's available memory already.
    cap = memory_available_mib() / 2
    async with window(server) as measured:
        deadline = time.monotonic() + ATTACK_SECONDS
        connections = await asyncio.gather(*(connect(server.port) for _ in range(count)))

        async def unfinished(writer: asyncio.StreamWriter) -> tuple[int, str]:
            writer.write(b"GET /health HTTP/1.1\r\nHost: hostile\r\nX-Unfinished: ")
            sent, stopped = await send_header(writer, size, deadline, rss_cap=(server, cap))
            if stopped in ("all sent", "RSS cap"):  # never finish it: hold until the deadline
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return sent, stopped

        sends = await asyncio.gather(*(unfinished(writer) for _, writer in connections))
        closed = sum(reader.at_eof() for reader, _ in connections)
        for _, writer in connections:
            drop(writer)
    return [
        (
            "header bytes the sockets took",
            f"{sum(sent for sent, _ in sends) / MIB:,.0f} MiB of {count * size // MIB:,} MiB",
        ),
        ("how the senders stopped", outcomes([stopped for _, stopped in sends])),
        ("connections the server closed (seen by 15 s)", f"{closed}"),
        ("RSS cap (half of MemAvailable)", f"{cap:,.0f} MiB"),
        *measured.rows(),
    ]


def memory_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 4096.0


def random_method(rng: random.Random) -> str:
    """A valid HTTP token: a WebDAV or cache method, or a random uppercase word."""
    known = ("PURGE", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "LINK")
    if rng.random() < 0.2:
        return rng.choice(known)
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))


def random_path(rng: random.Random) -> str:
    segments = rng.randint(1, 3)
    return "/" + "/".join(
        "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(3, 12)))
        for _ in range(segments)
    )


async def metrics_scrape_rows(server: Server, label: str) -> list[Row]:
    """Scrape /metrics and /%6detrics on the public port, and the metrics port if ours."""
    rows: list[Row] = []
    for target in ("/metrics", "/%6detrics"):
        status, body = await fetch(server.port, target)
        rows.append((f"{label}: public {target}", f"{status}, {len(body):,} B"))
    metrics_port = int(os.environ.get("METRICS_PORT", "9464"))
    owners = listener_pids(metrics_port)
    if not owners:
        rows.append((f"{label}: port {metrics_port}", "nothing listens"))
    elif not owners & ({server.pid} | children(server.pid)):
        rows.append((f"{label}: port {metrics_port}", f"another process listens ({owners})"))
    else:
        status, body = await fetch(metrics_port, "/metrics")
        rows.append((f"{label}: port {metrics_port} /metrics", f"{status}, {len(body):,} B"))
    return rows


async def attack_metrics(server: Server) -> list[Row]:
    rows = await metrics_scrape_rows(server, "before")
    rng = random.Random(20)
    requests = [(random_method(rng), random_path(rng)) for _ in range(2_000)]
    statuses: list[int | str] = []
    started = time.monotonic()

    async def ask(http: httpx.AsyncClient) -> None:
        while requests:
            method, path = requests.pop()
            try:
                statuses.append((await http.request(method, path)).status_code)
            except httpx.HTTPError as error:
                statuses.append(type(error).__name__)

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=10) as http:
        await asyncio.gather(*(ask(http) for _ in range(8)))
    rows.append(
        (
            "2,000 random methods and paths",
            f"{time.monotonic() - started:.1f} s: {outcomes(statuses)}",
        )
    )
    rows += await metrics_scrape_rows(server, "after")

    scrapes: list[int] = []  # bytes of each successful scrape (httpx asks for gzip, decodes)
    failures: list[int | str] = []
    # Where a scraper finds the metrics: the server's own metrics port, else the public one.
    metrics_port = int(os.environ.get("METRICS_PORT", "9464"))
    owned = listener_pids(metrics_port) & ({server.pid} | children(server.pid))
    scrape_port = metrics_port if owned else server.port
    rows.append(("20 scrapers scrape", f"port {scrape_port}"))

    async def scraper(deadline: float) -> None:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{scrape_port}", timeout=10) as h:
            while time.monotonic() < deadline:
                try:
                    response = await h.get("/metrics")
                    if response.status_code == 200:
                        scrapes.append(len(response.content))
                    else:
                        failures.append(response.status_code)
                except httpx.HTTPError as error:
                    failures.append(type(error).__name__)

    async with window(server) as measured:
        deadline = time.monotonic() + 5
        await asyncio.gather(*(scraper(deadline) for _ in range(20)))
    average = sum(scrapes) / len(scrapes) if scrapes else 0
    rows += [
        ("scrapes by 20 scrapers in 5 s", f"{len(scrapes):,} of {average:,.0f} B on average"),
        ("scrapes failed", outcomes(failures) if failures else "0"),
        *measured.rows(),
    ]
    return rows


BODY_LIMIT = 1_000_000  # every hostile body stays below REQUEST_MAX_BYTES (1 MiB by default)


def hostile_bodies() -> dict[str, bytes]:
    keys = 85_000
    bodies = {
        f"{keys:,} extra keys": '{"name":"x",' + ",".join(f'"k{i}":0' for i in range(keys)) + "}",
        f'{{"name": {{{keys:,} keys}}}}': '{"name":{'
        + ",".join(f'"k{i}":0' for i in range(keys))
        + "}}",
        '{"name": [0 x 490,000]}': '{"name":[' + ",".join(["0"] * 490_000) + "]}",
        '{"name": [[[...]]]}, 490,000 deep': '{"name":' + "[" * 490_000 + "]" * 490_000 + "}",
        '{"name": "<999,000 characters>"}': '{"name":"' + "x" * 999_000 + '"}',
        "[{} x 330,000]": "[" + ",".join(["{}"] * 330_000) + "]",
    }
    encoded = {name: body.encode() for name, body in bodies.items()}
    assert all(len(body) < BODY_LIMIT for body in encoded.values())
    return encoded


async def post_cost(
    http: httpx.AsyncClient, server: Server, body: bytes, count: int
) -> tuple[float, float, list[int | str]]:
    """POST `body` `count` times, one after another: server CPU and wall seconds per request,
    and the statuses."""
    statuses: list[int | str] = []
    cpu, started = server.cpu(), time.monotonic()
    for _ in range(count):
        try:
            response = await http.post(
                "/tutorials", content=body, headers={"content-type": "application/json"}
            )
            statuses.append(response.status_code)
        except httpx.HTTPError as error:
            statuses.append(type(error).__name__)
    return (server.cpu() - cpu) / count, (time.monotonic() - started) / count, statuses


async def attack_body(server: Server) -> tuple[list[Row], list[Row]]:
    bodies = hostile_bodies()
    table: list[Row] = []
    async with (
        window(server, normal=False) as measured,
        httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=60) as http,
    ):
        normal, normal_wall, statuses = await post_cost(http, server, b'{"name":"ok"}', 500)
        table.append(
            (
                '`{"name":"ok"}` x500',
                "13",
                outcomes(statuses),
                f"{1000 * normal:.2f} ms",
                "1",
                f"{1000 * normal_wall:.1f} ms",
            )
        )
        for name, body in bodies.items():
            cpu, wall, statuses = await post_cost(http, server, body, 10)
            table.append(
                (
                    f"`{name}` x10",
                    f"{len(body):,}",
                    outcomes(statuses),
                    f"{1000 * cpu:.1f} ms",
                    f"{cpu / normal:,.0f}" if normal else "n/a",
                    f"{1000 * wall:.1f} ms",
                )
            )
    return table, measured.rows()


def children(pid: int) -> set[int]:
    """Every descendant of `pid`."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def listener_pids(port: int) -> set[int]:
    """The processes holding a socket that listens on TCP `port` (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                pids.add(int(fd.parent.parent.name))
    return pids


def database_address(package: str) -> tuple[str, int]:
    """The host and port of the bake's DATABASE_URL, as its settings read it."""
    settings = importlib.import_module(f"{package}.settings").get_settings()
    url = settings.database_url_object
    return str(url.host or ""), int(url.port or 5432)


def postmaster(package: str) -> tuple[int | None, str]:
    """The pid of the local PostgreSQL postmaster serving DATABASE_URL, or why there is none."""
    host, port = database_address(package)
    if host not in ("localhost", "127.0.0.1", "::1"):
        return None, f"DATABASE_URL's host {host!r} is not this machine"
    for pid in listener_pids(port):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster"):
                return pid, f"postmaster {pid} on port {port}"
    return None, f"no postgres process listens on port {port}"


def signal_all(pids: list[int], signal_number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)


async def attack_frozen(server: Server) -> list[Row]:
    pid, found = postmaster(server.package)
    if pid is None:
        return [("database", f"not frozen: {found}")]
    freeze_seconds = 20.0
    async with window(server) as measured:
        frozen: list[int] = []
        frozen_at = time.monotonic()
        try:
            # The postmaster first, so that it forks no child we would miss.
            frozen = [pid]
            os.kill(pid, signal.SIGSTOP)
            frozen += sorted(children(pid))
            signal_all(frozen[1:], signal.SIGSTOP)
            frozen_at = time.monotonic()
            await asyncio.sleep(freeze_seconds)
        finally:
            signal_all(frozen[::-1], signal.SIGCONT)
            thawed_at = time.monotonic()
    # Requests in flight at some moment of the freeze, each with its answer's time.
    during = [
        (started, seconds, outcome, started + seconds)
        for started, seconds, _, outcome in measured.records
        if started < thawed_at and started + seconds > frozen_at
    ]
    answered = [entry for entry in during if entry[3] <= thawed_at]
    waited = [entry for entry in during if entry[3] > thawed_at]
    first_503 = min((answer for *_, outcome, answer in answered if outcome == 503), default=None)
    longest = max((seconds for _, seconds, *_ in answered), default=None)
    return [
        ("frozen", f"{found} and {len(frozen) - 1} children, {freeze_seconds:.0f} s"),
        ("normal requests in flight during the freeze", f"{len(during):,}"),
        ("answered while frozen", f"{len(answered):,}: {outcomes([e[2] for e in answered])}"),
        (
            "first 503 after the freeze",
            f"{first_503 - frozen_at:.2f} s" if first_503 is not None else "none while frozen",
        ),
        (
            "longest wait for an answer while frozen",
            f"{longest:.2f} s" if longest is not None else "-",
        ),
        (
            "still waiting at the thaw (longest wait then), answered after it",
            f"{len(waited):,} ({thawed_at - min(e[0] for e in waited):.2f} s): "
            f"{outcomes([e[2] for e in waited])}"
            if waited
            else "0",
        ),
        *measured.rows(),
    ]


Attack = Callable[[Server], Awaitable[list[Row]]]
ATTACKS: dict[str, list[tuple[str, Attack]]] = {
    "quiet": [("quiet: the normal clients alone, 5 s", attack_quiet)],
    "head": [("head: 16 connections of HEAD for 5 s", attack_head)],
    "pipeline": [("pipeline: 10 x 100,000 pipelined GET /health, never read", attack_pipeline)],
    "headers": [
        ("headers (a): one 100 MiB header value", attack_huge_header),
        ("headers (b): 20 unfinished 50 MiB headers", attack_unfinished_headers),
    ],
    "metrics": [("metrics: random methods, then scrapes", attack_metrics)],
    "frozen": [("frozen: the database stopped (SIGSTOP) for 20 s", attack_frozen)],
}
ORDER = ["quiet", "head", "pipeline", "headers", "metrics", "body", "frozen"]


async def run(package: str, only: list[str], keep_logs: bool) -> None:
    for name in [name for name in ORDER if name in only]:
        if name == "body":
            with serving(package, keep_logs) as server:
                table, rows = await attack_body(server)
                rows += server.rows()
            print_table(
                "body: hostile JSON to POST /tutorials, server CPU per request",
                table,
                ("body", "bytes", "statuses", "server CPU / request", "x normal", "wall / request"),
            )
            print_table("body: the server meanwhile", rows)
            continue
        for title, attack in ATTACKS[name]:
            with serving(package, keep_logs) as server:
                rows = await attack(server)
                rows += server.rows()
            print_table(title, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the baked project's import package")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=ORDER,
        default=ORDER,
        metavar="NAME",
        help=f"attacks to run, of: {', '.join(ORDER)} (all)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    arguments = parser.parse_args()
    versions = {
        name: importlib.import_module(name).__version__
        for name in ("fastapi", "uvicorn", "httptools", "sqlalchemy", "asyncpg")
        if importlib.util.find_spec(name)
    }
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
        + f"; {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs shared by server,"
        f" attacker and normal clients; load average {load} at the start."
    )
    started = time.monotonic()
    asyncio.run(run(arguments.package, arguments.only, arguments.keep_logs))
    print(f"\n{time.monotonic() - started:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark a baked project's data layer against raw asyncpg, side by side.

Run inside a baked project, with its venv and its .env (`make bench` does all of that):

    python benchmarks/data_layer.py <package> [--rounds 5]

Single-row saves run at concurrency 1, 20 and 200, the variants taking turns in short slices so
that all of them see the same machine; bulk saves take turns likewise. Both sides get the same
connection limits: raw asyncpg's pool keeps `DATABASE_POOL_SIZE` connections and may open up to
`DATABASE_MAX_OVERFLOW` more, as the engine's pool may. One variant is SQLAlchemy set up as its
documentation shows, with none of the project's code (the same pool limits): what the stack
itself allows, beside what the project makes of it. For each variant the table shows the median
rows/s over its slices in all rounds, its ratio to raw asyncpg, the median p50 and p99 latency
of a save over the slices, and what each save cost: round trips (requests written to the
database sockets), connections opened, and client CPU. With
pgbouncer installed, a second table compares sessions through PgBouncer with a client-side pool
and without one (the template's PgBouncer mode before issue #13). A third table reads single
rows by primary key on a primary and a streaming standby of the benchmark's own: get_session()
and get_read_session() on the primary (no read URL: the same pool), get_read_session() on the
standby (DATABASE_READ_URL), and raw asyncpg. The exit code is 1 when a printed target is
missed.
"""

import argparse
import asyncio
import asyncio.selector_events
import gc
import importlib
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import sqlalchemy
from pydantic import SecretStr
from sqlalchemy import URL, bindparam, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

# Concurrency: (slices per variant and round, saves per slice).
SINGLE = {1: (6, 50), 20: (5, 200), 200: (3, 400)}
BOUNCED = {1: (4, 40), 20: (3, 150)}
READS = {1: (6, 200), 20: (5, 1000)}
READ_ROWS = 1000  # rows to read by primary key, on the primary and its standby
RAW_READ = "reads: raw asyncpg, primary"
BULK_ROWS = 50_000
BULK_REPEATS = 2  # bulk saves per variant per round, the variants taking turns
RAW = "raw asyncpg, transaction per save"
STOCK = "stock SQLAlchemy: add, flush, commit (ORM)"
EXECUTE = "execute: one statement alone (Core)"
TARGETS = [  # (variant, reference, minimum ratio)
    ("get_session + save_tutorial (ORM), c=20", f"{RAW}, c=20", 0.35),
    ("get_session + Core INSERT, c=20", f"{RAW}, c=20", 0.5),
    ("get_session + save_tutorial (ORM), c=1", "bare async_sessionmaker (ORM), c=1", 0.95),
    ("get_session + save_tutorial (ORM), c=20", "bare async_sessionmaker (ORM), c=20", 0.95),
    ("save_tutorials (COPY), c=1", "raw asyncpg COPY, c=1", 0.8),
    ("PgBouncer: sessions, pooled, c=1", "PgBouncer: sessions, NullPool (before), c=1", 4.0),
    ("PgBouncer: sessions, pooled, c=20", "PgBouncer: sessions, NullPool (before), c=20", 4.0),
]

# Fair waiting: beyond the pool, the slowest saves wait little longer than raw asyncpg's.
P99_TARGETS = [  # (variant, reference, maximum ratio of p99 latencies)
    ("get_session + save_tutorial (ORM), c=200", f"{RAW}, c=200", 3.0),
    ("get_session + Core INSERT, c=200", f"{RAW}, c=200", 3.0),
    (f"{EXECUTE}, c=200", f"{RAW}, c=200", 3.0),
]

Operation = Callable[[int], Awaitable[None]]


class Meter:
    """Counts, for the whole process, requests written to sockets (one per round trip: the
    driver writes a request, then waits for its answer) and sockets opened (connections)."""

    writes = 0
    connections = 0

    @classmethod
    def install(cls) -> None:
        transport: Any = asyncio.selector_events._SelectorSocketTransport
        write, init = transport.write, transport.__init__

        def counting_write(self: Any, data: Any) -> None:
            cls.writes += 1
            write(self, data)

        def counting_writelines(self: Any, buffers: Any) -> None:
            cls.writes += 1
            write(self, b"".join(buffers))

        def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
            cls.connections += 1
            init(self, *args, **kwargs)

        transport.write, transport.writelines = counting_write, counting_writelines
        transport.__init__ = counting_init


@dataclass
class Totals:
    """What one variant spent in one round."""

    saves: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    writes: int = 0
    connections: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per save

    async def run(self, operation: Operation, count: int, concurrency: int) -> None:
        """Run `operation` `count` times on `concurrency` workers, adding up what it cost."""
        numbers = iter(range(count))

        async def worker() -> None:
            for number in numbers:
                started = time.perf_counter()
                await operation(number)
                self.latencies.append(time.perf_counter() - started)

        writes, connections = Meter.writes, Meter.connections
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        self.seconds += time.perf_counter() - started
        self.cpu += time.process_time() - cpu
        self.writes += Meter.writes - writes
        self.connections += Meter.connections - connections
        self.saves += count


@dataclass
class Results:
    """Every slice's totals, per variant (named with its concurrency)."""

    samples: dict[str, list[Totals]] = field(default_factory=dict)

    def add(self, name: str, totals: Totals) -> None:
        self.samples.setdefault(name, []).append(totals)

    def rate(self, name: str, rows_per_save: int = 1) -> float:
        return statistics.median(t.saves * rows_per_save / t.seconds for t in self.samples[name])

    def latency(self, name: str) -> tuple[float, float]:
        """Median over slices of p50 and p99 latency, in milliseconds."""
        cuts = [statistics.quantiles(t.latencies, n=100) for t in self.samples[name]]
        return (
            1000 * statistics.median(cut[49] for cut in cuts),
            1000 * statistics.median(cut[98] for cut in cuts),
        )

    def per_save(self, name: str) -> tuple[float, float, float]:
        """Round trips, connections opened and client CPU µs per save, over all rounds."""
        saves = sum(t.saves for t in self.samples[name])
        return (
            sum(t.writes for t in self.samples[name]) / saves,
            sum(t.connections for t in self.samples[name]) / saves,
            sum(t.cpu for t in self.samples[name]) / saves * 1e6,
        )


def rotated(names: list[str], by: int) -> list[str]:
    """`names` starting at another place each time, so no variant always runs first."""
    return names[by % len(names) :] + names[: by % len(names)]


async def interleaved(
    operations: dict[str, Operation],
    levels: dict[int, tuple[int, int]],
    round_number: int,
    results: Results,
) -> None:
    """Each operation at each concurrency, the operations taking turns slice by slice; each
    slice is one sample (a slowdown from elsewhere on the machine hits a few, not a round)."""
    for concurrency, (slices, saves) in levels.items():
        for turn in range(slices):
            for name in rotated(list(operations), round_number + turn):
                spent = Totals()
                await spent.run(operations[name], saves, concurrency)
                results.add(f"{name}, c={concurrency}", spent)


def raw_saving(pool: asyncpg.Pool, prefix: str) -> Operation:
    """Raw asyncpg from `pool`: a transaction around one INSERT … RETURNING."""

    async def save(number: int) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await connection.fetchval(
                "INSERT INTO tutorials (name) VALUES ($1) RETURNING tutorial_id",
                f"{prefix} {number}",
            )

    return save


class Variants:
    """Every way of saving tutorials that the benchmark compares."""

    def __init__(self, package: str, settings: Any, raw_pool: asyncpg.Pool) -> None:
        self.database = importlib.import_module(f"{package}.core.database")
        self.repository = importlib.import_module(f"{package}.repository")
        self.tutorial = importlib.import_module(f"{package}.models").Tutorial
        self.bare = async_sessionmaker(self.database.get_engine(), expire_on_commit=False)
        # SQLAlchemy as its documentation sets it up, with the same pool limits and none of
        # this project's code: what the stack itself allows.
        self.stock_engine = create_async_engine(
            settings.database_url_object,  # the development URL: nothing asyncpg must parse
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        self.stock = async_sessionmaker(self.stock_engine)
        self.raw_pool = raw_pool
        self.names = [f"bulk {number}" for number in range(BULK_ROWS)]

    async def with_get_session(self, number: int) -> None:
        async with self.database.get_session() as session:
            await self.repository.save_tutorial(session, f"get_session {number}")

    async def with_core_insert(self, number: int) -> None:
        async with self.database.get_session() as session:
            await session.execute(self.repository.INSERT_TUTORIAL, {"name": f"core {number}"})

    async def alone(self, number: int) -> None:
        await self.database.execute(self.repository.INSERT_TUTORIAL, {"name": f"alone {number}"})

    async def with_stock_sqlalchemy(self, number: int) -> None:
        async with self.stock() as session:
            tutorial = self.tutorial(name=f"stock {number}")
            session.add(tutorial)
            await session.flush()  # the id, as save_tutorial() gives it
            await session.commit()

    def committing(self, factory: async_sessionmaker[Any], prefix: str) -> Operation:
        """Sessions from `factory`: save_tutorial, then an explicit commit."""

        async def save(number: int) -> None:
            async with factory() as session:
                await self.repository.save_tutorial(session, f"{prefix} {number}")
                await session.commit()

        return save

    async def bulk_save_tutorials(self, _: int) -> None:
        async with self.database.get_session() as session:
            await self.repository.save_tutorials(session, self.names)

    async def bulk_orm_add_all(self, _: int) -> None:
        async with self.bare() as session:
            session.add_all([self.tutorial(name=name) for name in self.names])
            await session.commit()

    async def bulk_orm_insert(self, _: int) -> None:
        async with self.bare() as session:
            await session.execute(insert(self.tutorial), [{"name": name} for name in self.names])
            await session.commit()

    async def bulk_raw_copy(self, _: int) -> None:
        async with self.raw_pool.acquire() as connection, connection.transaction():
            await connection.copy_records_to_table(
                "tutorials", columns=["name"], records=[(name,) for name in self.names]
            )

    def single_saves(self) -> dict[str, Operation]:
        saves = {
            "get_session + save_tutorial (ORM)": self.with_get_session,
            "get_session + Core INSERT": self.with_core_insert,
            EXECUTE: self.alone,
            "bare async_sessionmaker (ORM)": self.committing(self.bare, "bare"),
            STOCK: self.with_stock_sqlalchemy,
            RAW: raw_saving(self.raw_pool, "raw"),
        }
        if not hasattr(self.repository, "INSERT_TUTORIAL"):  # a project from before #13
            del saves["get_session + Core INSERT"]
        if not hasattr(self.database, "execute"):  # a project from before #30
            del saves[EXECUTE]
        return saves

    def bulk_saves(self) -> dict[str, Operation]:
        return {
            "save_tutorials (COPY)": self.bulk_save_tutorials,
            "ORM session.add_all": self.bulk_orm_add_all,
            "ORM insert() executemany": self.bulk_orm_insert,
            "raw asyncpg COPY": self.bulk_raw_copy,
        }

    def through_pgbouncer(
        self, settings: Any, raw_pool: asyncpg.Pool
    ) -> tuple[dict[str, Operation], list[AsyncEngine]]:
        """Sessions through PgBouncer with this project's PgBouncer mode, without a client
        pool as before, and raw asyncpg through it (statement cache off, same pool size)."""
        pooled = self.database.create_engine(settings)
        unpooled = self.database.create_engine(settings, poolclass=NullPool)

        def saving(engine: AsyncEngine) -> Operation:
            return self.committing(async_sessionmaker(engine, expire_on_commit=False), "bounced")

        operations = {
            "PgBouncer: sessions, pooled": saving(pooled),
            "PgBouncer: sessions, NullPool (before)": saving(unpooled),
            "PgBouncer: raw asyncpg": raw_saving(raw_pool, "bounced raw"),
        }
        return operations, [pooled, unpooled]

    async def empty_table(self) -> None:
        async with self.raw_pool.acquire() as connection:
            await connection.execute("TRUNCATE tutorials")


# How the plumbing's tests run PgBouncer (plain functions, no Jinja: loaded as it is).
SERVERS = Path(__file__).resolve().parents[1] / "tests" / "plumbing" / "servers.py"


def load_servers_module() -> ModuleType:
    """The template's tests/plumbing/servers.py, working on the bake we run in."""
    spec = importlib.util.spec_from_file_location("servers", SERVERS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.PROJECT_ROOT = Path.cwd()  # its scripts/local_postgres.py is the bake's
    return module


def pgbouncer(url: URL) -> AbstractContextManager[URL | None]:
    """PgBouncer (transaction mode) in front of `url`'s server while in use, if installed."""
    servers = load_servers_module()
    binary = servers.find_pgbouncer()
    if binary is None:
        return nullcontext()
    return servers.running_pgbouncer(binary, url)  # type: ignore[no-any-return]


def raw_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def set_synchronous_commit(dsn: str, value: str) -> None:
    """synchronous_commit = `value` ("off", "DEFAULT") for connections opened from now on to
    this database. (Also benchmarks/web.py's.)"""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = "
            f"{value}', current_database()); END $$"
        )
    finally:
        await connection.close()


async def benchmark(package: str, rounds: int) -> int:
    settings_module = importlib.import_module(f"{package}.settings")
    settings = settings_module.get_settings()
    url = settings.database_url_object
    limits = {
        "min_size": settings.database_pool_size,
        "max_size": settings.database_pool_size + settings.database_max_overflow,
    }
    # Every single-row variant waits for the same WAL flush at commit; on a shared disk its
    # jitter would drown the differences in client-side work that this benchmark compares.
    await set_synchronous_commit(raw_dsn(url), "off")
    raw_pool = await asyncpg.create_pool(raw_dsn(url), **limits)
    variants = Variants(package, settings, raw_pool)
    single, bulk = variants.single_saves(), variants.bulk_saves()
    results = Results()
    Meter.install()
    try:
        async with variants.database.get_engine().connect() as connection:
            server = (await connection.scalar(text("SHOW server_version"))) or "?"
        for operation in single.values():  # fill pools and statement caches
            await Totals().run(operation, 200, 20)
        for operation in bulk.values():
            await Totals().run(operation, 1, 1)
        for round_number in range(rounds):
            await variants.empty_table()
            gc.collect()
            await interleaved(single, SINGLE, round_number, results)
            await variants.empty_table()
            gc.collect()
            await interleaved(bulk, {1: (BULK_REPEATS, 1)}, round_number, results)
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
        bounced = await bench_pgbouncer(variants, settings_module, url, limits, rounds, results)
        reads = await bench_reads(variants, settings_module, rounds, results)
    finally:
        await set_synchronous_commit(raw_dsn(url), "DEFAULT")
        await raw_pool.close()
        await variants.database.dispose()
        await variants.stock_engine.dispose()
    return report(results, rounds, server, settings, [*single, *bounced], list(bulk), reads)


async def bench_pgbouncer(
    variants: Variants,
    settings_module: ModuleType,
    url: URL,
    limits: dict[str, int],
    rounds: int,
    results: Results,
) -> list[str]:
    """The PgBouncer rounds, when pgbouncer is installed; the names of its variants."""
    with pgbouncer(url) as bounced_url:
        if bounced_url is None:
            print("pgbouncer is not installed: no PgBouncer section", file=sys.stderr)
            return []
        settings = settings_module.Settings(
            database_url=SecretStr(bounced_url.render_as_string(hide_password=False)),
            database_pgbouncer=True,
        )
        raw_pool = await asyncpg.create_pool(raw_dsn(bounced_url), statement_cache_size=0, **limits)
        operations, engines = variants.through_pgbouncer(settings, raw_pool)
        try:
            for operation in operations.values():
                await Totals().run(operation, 40, 20)
            for round_number in range(rounds):
                await variants.empty_table()
                await interleaved(operations, BOUNCED, round_number, results)
                print(f"PgBouncer round {round_number + 1}/{rounds} done", file=sys.stderr)
        finally:
            await raw_pool.close()
            for engine in engines:
                await engine.dispose()
        return list(operations)


async def bench_reads(
    variants: Variants, settings_module: ModuleType, rounds: int, results: Results
) -> list[str]:
    """Primary-key reads on a primary and its streaming standby, both the benchmark's own
    (the template's tests/plumbing/servers.py); the names of the variants."""
    servers = load_servers_module()
    database = variants.database
    with (
        servers.running_server("bench_reads", "reads") as (primary, url),
        servers.running_standby(primary, url) as (_, standby_url),
    ):
        settings = settings_module.Settings(
            database_url=SecretStr(url.render_as_string(hide_password=False)),
            database_read_url=SecretStr(standby_url.render_as_string(hide_password=False)),
        )
        engine, standby = database.create_engine(settings), database.create_read_engine(settings)
        await importlib.import_module(f"{database.__package__}.migrations").upgrade(engine)
        raw_pool = await asyncpg.create_pool(raw_dsn(url), min_size=20, max_size=20)
        await raw_pool.execute(
            "INSERT INTO tutorials (name) SELECT 'read ' || n FROM generate_series(1, $1) n",
            READ_ROWS,
        )
        for _ in range(100):  # the standby replays the rows within milliseconds
            async with standby.connect() as connection:
                if await connection.scalar(text("SELECT count(*) FROM tutorials")) == READ_ROWS:
                    break
            await asyncio.sleep(0.1)
        on_primary = database.read_sessions(engine)
        routes = {  # get_read_session()'s two factories, as the module sets them
            "reads: get_session, primary": (on_primary, on_primary),
            "reads: get_read_session, primary": (on_primary, on_primary),
            "reads: get_read_session, standby": (on_primary, database.read_sessions(standby)),
        }
        if hasattr(database, "execute_read"):  # a project from #30 on
            routes["reads: execute_read, primary"] = routes["reads: get_read_session, primary"]
            routes["reads: execute_read, standby"] = routes["reads: get_read_session, standby"]
        saved = (database.session_factory, database.primary_read_session_factory)
        saved_reads = database.read_session_factory, database.read_engine
        database.session_factory = async_sessionmaker(engine, expire_on_commit=False)

        by_key = select(variants.tutorial.tutorial_id, variants.tutorial.name).where(
            variants.tutorial.tutorial_id == bindparam("tutorial_id")
        )

        def reading(name: str) -> Operation:
            get = database.get_session if "get_session" in name else database.get_read_session
            if "execute_read" in name:

                async def read_alone(number: int) -> None:
                    database.primary_read_session_factory, database.read_session_factory = routes[
                        name
                    ]
                    database.read_engine = standby if "standby" in name else None
                    (
                        await database.execute_read(by_key, {"tutorial_id": number % READ_ROWS + 1})
                    ).first()

                return read_alone

            async def read(number: int) -> None:
                database.primary_read_session_factory, database.read_session_factory = routes[name]
                database.read_engine = None  # as before #30: no fallback check per session
                async with get() as session:
                    await session.get(variants.tutorial, number % READ_ROWS + 1)

            return read

        async def raw_read(number: int) -> None:
            await raw_pool.fetchrow(
                "SELECT * FROM tutorials WHERE tutorial_id = $1", number % READ_ROWS + 1
            )

        operations = {name: reading(name) for name in routes} | {RAW_READ: raw_read}
        try:
            for operation in operations.values():
                await Totals().run(operation, 200, 20)
            for round_number in range(rounds):
                await interleaved(operations, READS, round_number, results)
                print(f"reads round {round_number + 1}/{rounds} done", file=sys.stderr)
        finally:
            database.session_factory, database.primary_read_session_factory = saved
            database.read_session_factory, database.read_engine = saved_reads
            await raw_pool.close()
            await engine.dispose()
            await standby.dispose()
        return list(operations)


def rows(results: Results, names: list[str]) -> Iterator[str]:
    for name in names:
        for key in sorted(
            (key for key in results.samples if key.rsplit(", c=", 1)[0] == name),
            key=lambda key: int(key.rsplit("=", 1)[1]),
        ):
            concurrency = key.rsplit(", c=", 1)[1]
            raw = f"{RAW}, c={concurrency}"
            if name.startswith("PgBouncer"):
                raw = f"PgBouncer: raw asyncpg, c={concurrency}"
            if name.startswith("reads"):
                raw = f"{RAW_READ}, c={concurrency}"
            trips, connections, cpu = results.per_save(key)
            p50, p99 = results.latency(key)
            yield (
                f"| {name} | {concurrency} | {results.rate(key):,.0f} "
                f"| {results.rate(key) / results.rate(raw):.2f} | {p50:.1f} / {p99:.1f} "
                f"| {trips:.2f} | {connections * 1000:.1f} | {cpu:,.0f} |"
            )


def report(
    results: Results,
    rounds: int,
    server: str,
    settings: Any,
    single: list[str],
    bulk: list[str],
    reads: list[str],
) -> int:
    print(
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"asyncpg {asyncpg.__version__}, PostgreSQL {server}; {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; {rounds} rounds, medians over slices, "
        f"variants taking turns; synchronous_commit off; pools of {settings.database_pool_size} "
        f"+ {settings.database_max_overflow} overflow on both sides.\n"
    )
    print(
        "| variant | concurrency | rows/s | ratio to raw asyncpg | p50 / p99 ms "
        "| round trips / save | connections opened / 1,000 saves | client CPU µs / save |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows(results, single)))
    print(
        f"\n| bulk, {BULK_ROWS:,} rows per save | | rows/s | ratio to raw COPY | | | "
        "| client CPU µs / row |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    copy = results.rate("raw asyncpg COPY, c=1", BULK_ROWS)
    for name in bulk:
        rate = results.rate(f"{name}, c=1", BULK_ROWS)
        cpu = results.per_save(f"{name}, c=1")[2] / BULK_ROWS
        print(f"| {name} | | {rate:,.0f} | {rate / copy:.2f} | | | | {cpu:.2f} |")
    print(
        "\n| reads by primary key | concurrency | rows/s | ratio to raw asyncpg (primary) "
        "| p50 / p99 ms | round trips / read | connections opened / 1,000 reads "
        "| client CPU µs / read |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows(results, reads)))
    print()
    failures = 0
    for variant, reference, minimum in TARGETS:
        if variant not in results.samples or reference not in results.samples:
            print(f"target: {variant} / {reference} (>= {minimum}): not measured")
            continue
        ratio = results.rate(variant) / results.rate(reference)
        verdict = "met" if ratio >= minimum else "MISSED"
        failures += verdict == "MISSED"
        print(f"target: {variant} / {reference} = {ratio:.2f} (>= {minimum}): {verdict}")
    for variant, reference, maximum in P99_TARGETS:
        ratio = results.latency(variant)[1] / results.latency(reference)[1]
        verdict = "met" if ratio <= maximum else "MISSED"
        failures += verdict == "MISSED"
        print(f"target: p99 of {variant} / {reference} = {ratio:.2f} (<= {maximum}): {verdict}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the baked project's import package")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (at least 3)")
    arguments = parser.parse_args()
    if arguments.rounds < 3:
        parser.error("--rounds must be at least 3")
    return asyncio.run(benchmark(arguments.package, arguments.rounds))


if __name__ == "__main__":
    sys.exit(main())

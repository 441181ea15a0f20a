"""Benchmark a baked project's data layer against its alternatives, side by side.

Run inside a baked project, with its venv and its .env (`make bench` does all of that):

    python benchmarks/data_layer.py <package> [--rounds 5]

Each round runs every variant on an emptied table: single-row saves with the variants taking
turns (one save each at concurrency 1, a twentieth of the saves each at 20), so that all of
them see the same machine; bulk saves likewise, one each in turn. The table shows medians over
the rounds and each variant's ratio to the reference of its group.
"""

import argparse
import asyncio
import gc
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import sessionmaker

SINGLE_SAVES = {1: 600, 20: 1_600}  # concurrency: saves per variant per round
SLICES = 20  # concurrent saves run in this many turns, the variants taking turns
BULK_ROWS = 50_000
BULK_REPEATS = 4  # bulk saves per variant per round, the variants taking turns
TARGETS = [  # (variant, reference, minimum ratio)
    ("get_session, c=1", "bare async_sessionmaker, c=1", 0.95),
    ("get_session, c=20", "bare async_sessionmaker, c=20", 0.95),
    ("save_tutorials (COPY)", "raw asyncpg COPY", 0.80),
]

Operation = Callable[[int], Awaitable[None]]


async def run_concurrently(operation: Operation, count: int, concurrency: int) -> float:
    """Run `operation` `count` times on `concurrency` workers; the seconds it took."""
    numbers = iter(range(count))

    async def worker() -> None:
        for number in numbers:
            await operation(number)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def rotated(names: list[str], by: int) -> list[str]:
    """`names` starting at another place each time, so no variant always runs first."""
    return names[by % len(names) :] + names[: by % len(names)]


async def interleaved(
    operations: dict[str, Operation], count: int, concurrency: int, round_number: int
) -> dict[str, float]:
    """Saves per second of each operation, the operations taking turns so that all of them
    see the same machine: one save each at a time without concurrency, else SLICES turns."""
    turns = count if concurrency == 1 else SLICES
    seconds = dict.fromkeys(operations, 0.0)
    for turn in range(turns):
        for name in rotated(list(operations), round_number + turn):
            seconds[name] += await run_concurrently(operations[name], count // turns, concurrency)
    return {name: count / spent for name, spent in seconds.items()}


class Variants:
    """Every way of saving tutorials that the benchmark compares."""

    def __init__(self, package: str, raw_pool: asyncpg.Pool) -> None:
        self.database = importlib.import_module(f"{package}.database")
        self.repository = importlib.import_module(f"{package}.repository")
        self.tutorial = importlib.import_module(f"{package}.models").Tutorial
        self.bare = async_sessionmaker(self.database.engine, expire_on_commit=False)
        self.raw_pool = raw_pool
        self.names = [f"bulk {number}" for number in range(BULK_ROWS)]

    async def with_get_session(self, number: int) -> None:
        async with self.database.get_session() as session:
            session.add(self.tutorial(name=f"get_session {number}"))

    async def with_bare_sessionmaker(self, number: int) -> None:
        async with self.bare() as session:
            session.add(self.tutorial(name=f"bare {number}"))
            await session.commit()

    async def with_tutorial_pattern(self, number: int) -> None:
        """The tutorial's code, repaired only enough to run: a sessionmaker per call."""

        @asynccontextmanager
        async def get_session() -> Any:
            factory = sessionmaker(self.database.engine, class_=AsyncSession)  # type: ignore[call-overload]
            async with factory() as session:
                try:
                    yield session
                except BaseException:
                    await session.rollback()
                    raise

        async with get_session() as session:
            session.add(self.tutorial(name=f"tutorial {number}"))
            await session.commit()

    async def with_raw_asyncpg(self, number: int) -> None:
        async with self.raw_pool.acquire() as connection, connection.transaction():
            await connection.execute("INSERT INTO tutorials (name) VALUES ($1)", f"raw {number}")

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
        return {
            "get_session": self.with_get_session,
            "bare async_sessionmaker": self.with_bare_sessionmaker,
            "tutorial pattern (sessionmaker per call)": self.with_tutorial_pattern,
            "raw asyncpg, transaction per save": self.with_raw_asyncpg,
        }

    def bulk_saves(self) -> dict[str, Operation]:
        return {
            "save_tutorials (COPY)": self.bulk_save_tutorials,
            "ORM session.add_all": self.bulk_orm_add_all,
            "ORM insert() executemany": self.bulk_orm_insert,
            "raw asyncpg COPY": self.bulk_raw_copy,
        }

    async def empty_table(self) -> None:
        async with self.raw_pool.acquire() as connection:
            await connection.execute("TRUNCATE tutorials")


async def benchmark(package: str, rounds: int) -> int:
    settings = importlib.import_module(f"{package}.settings").get_settings()
    dsn = settings.database_url_object.set(drivername="postgresql")
    raw_pool = await asyncpg.create_pool(
        dsn.render_as_string(hide_password=False), min_size=20, max_size=20
    )
    async with raw_pool.acquire() as connection:
        # Every single-row variant waits for the same WAL flush at commit; on a shared disk its
        # jitter would drown the differences in client-side work that this benchmark compares.
        await connection.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off',"
            " current_database()); END $$"
        )
    await raw_pool.expire_connections()
    variants = Variants(package, raw_pool)
    single, bulk = variants.single_saves(), variants.bulk_saves()
    rates: dict[str, list[float]] = {
        **{f"{name}, c={c}": [] for c in SINGLE_SAVES for name in single},
        **{name: [] for name in bulk},
    }
    try:
        async with variants.database.engine.connect() as connection:
            server = (await connection.scalar(text("SHOW server_version"))) or "?"
        for operation in [*single.values(), *bulk.values()]:  # fill pools and statement caches
            await run_concurrently(operation, 20, 20 if operation in single.values() else 1)
        for round_number in range(rounds):
            await variants.empty_table()
            gc.collect()
            for concurrency, count in SINGLE_SAVES.items():
                measured = await interleaved(single, count, concurrency, round_number)
                for name, rate in measured.items():
                    rates[f"{name}, c={concurrency}"].append(rate)
            await variants.empty_table()
            gc.collect()
            for name, rate in (await interleaved(bulk, BULK_REPEATS, 1, round_number)).items():
                rates[name].append(BULK_ROWS * rate)
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    finally:
        async with raw_pool.acquire() as connection:
            await connection.execute(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET synchronous_commit',"
                " current_database()); END $$"
            )
        await raw_pool.close()
        await variants.database.dispose()
    return report(rates, rounds, server)


def report(rates: dict[str, list[float]], rounds: int, server: str) -> int:
    medians = {name: statistics.median(values) for name, values in rates.items()}
    references = {
        "c=1": medians["bare async_sessionmaker, c=1"],
        "c=20": medians["bare async_sessionmaker, c=20"],
        "bulk": medians["raw asyncpg COPY"],
    }
    print(
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"asyncpg {asyncpg.__version__}, PostgreSQL {server}; {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; median of {rounds} rounds, "
        "alternating order; synchronous_commit off.\n"
    )
    print("| variant | rows/s (median) | ratio to reference |")
    print("|---|---:|---:|")
    for name, median in medians.items():
        group = "bulk" if "," not in name else name.rsplit(", ", 1)[1]
        print(f"| {name} | {median:,.0f} | {median / references[group]:.2f} |")
    print()
    failures = 0
    for variant, reference, minimum in TARGETS:
        ratio = medians[variant] / medians[reference]
        verdict = "met" if ratio >= minimum else "MISSED"
        failures += verdict == "MISSED"
        print(f"target: {variant} / {reference} = {ratio:.2f} (>= {minimum}): {verdict}")
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

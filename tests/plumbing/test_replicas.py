"""Reads on a streaming standby, the fallback to the primary, a failover, and what a failover
can lose: real streaming replication (pg_basebackup -R) on servers of the tests' own."""

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
from pydantic import SecretStr
from sqlalchemy import URL, func, insert, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.core.database import (
    WriteInReadSessionError,
    execute_read,
    get_read_session,
    get_session,
)
from {{ cookiecutter.project_slug }}.core.migrations import upgrade
from {{ cookiecutter.project_slug }}.models import Tutorial
from {{ cookiecutter.project_slug }}.settings import Settings

from ..server_state import count_tutorials
from .conftest import settings_for
from .servers import running_server, running_standby

IN_RECOVERY = text("SELECT pg_is_in_recovery()")
# Seconds the standby receives no WAL before the primary crashes (test_what_a_failover_loses).
STALL = 0.5


class Pair(NamedTuple):
    primary: Any  # scripts/local_postgres.py's Server
    url: URL
    standby: Any
    standby_url: URL


def raw(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def run(url: URL, *statements: str) -> list[Any]:
    """Run `statements` outside a transaction (ALTER SYSTEM); the last one's first column."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
        return list(result.scalars()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def replayed(pair: Pair) -> None:
    """Wait until the standby has replayed all the primary has written so far."""
    [lsn] = await run(pair.url, "SELECT pg_current_wal_lsn()::text")
    check = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
    for _ in range(100):
        if await run(pair.standby_url, check) == [True]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the standby did not catch up in 10 s")


@asynccontextmanager
async def replicated_pair(synchronous: bool = False) -> AsyncIterator[Pair]:
    """A primary and its streaming standby, the project's tables migrated on both; with
    `synchronous`, each commit waits until the standby has applied it (remote_apply)."""
    with (
        running_server("replica_tester", "replicas") as (primary, url),
        running_standby(primary, url) as (standby, standby_url),
    ):
        pair = Pair(primary, url, standby, standby_url)
        if synchronous:  # only now: with no standby yet, every commit would wait forever
            await run(
                url,
                "ALTER SYSTEM SET synchronous_standby_names = '*'",
                "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
                "SELECT pg_reload_conf()",
            )
            for _ in range(100):  # the reload is asynchronous: new sessions see it when done
                if await run(url, "SELECT sync_state FROM pg_stat_replication") == ["sync"]:
                    break
                await asyncio.sleep(0.1)
        engine = database.create_engine(Settings(database_url=SecretStr(raw(url))))
        await upgrade(engine)
        await engine.dispose()
        await replayed(pair)
        yield pair


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[Pair]:
    """A primary and its standby, for the tests that leave both as they found them."""
    async with replicated_pair() as pair:
        yield pair


@pytest.fixture
async def route(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., None]]:
    """A function pointing get_session() at `url` and get_read_session() at `read_url`, with
    engines built as the app builds its own; disposed of when the test ends."""
    engines: list[AsyncEngine] = []

    def route(url: URL | str, read_url: URL | None = None) -> None:
        settings = Settings(
            database_url=SecretStr(url if isinstance(url, str) else raw(url)),
            database_read_url=SecretStr(raw(read_url)) if read_url else None,
        )
        engine = database.create_engine(settings)
        read_engine = database.create_read_engine(settings)
        engines.extend(filter(None, (engine, read_engine)))
        primary_reads = database.read_sessions(engine)
        replacements = {
            "engine": engine,
            "session_factory": async_sessionmaker(engine, expire_on_commit=False),
            "read_engine": read_engine,
            "primary_read_session_factory": primary_reads,
            "read_session_factory": database.read_sessions(read_engine)
            if read_engine
            else primary_reads,
            "replica_down": False,
        }
        for name, value in replacements.items():
            monkeypatch.setattr(database, name, value)

    yield route
    for engine in engines:
        await engine.dispose()


async def read(statement: Any) -> Any:
    """`statement`'s value, read with get_read_session()."""
    async with get_read_session() as session:
        return await session.scalar(statement)


async def in_recovery(read_alone: bool) -> bool:
    """Whether the server a read reaches is a standby, read with get_read_session() or (with
    `read_alone`) execute_read()."""
    if read_alone:
        return bool((await execute_read(select(func.pg_is_in_recovery()))).scalar())
    return bool(await read(IN_RECOVERY))


@pytest.mark.commits
async def test_reads_run_on_the_standby_read_only(pair: Pair, route: Callable[..., None]) -> None:
    """get_read_session() reads on the standby in a read-only transaction, execute_read() on
    the standby too; get_session() on the primary."""
    route(pair.url, pair.standby_url)
    async with get_read_session() as session:
        read_only = await session.scalar(text("SHOW transaction_read_only"))
        assert (await session.scalar(IN_RECOVERY), read_only) == (True, "on")
    async with get_session() as session:
        assert await session.scalar(IN_RECOVERY) is False
    assert await in_recovery(read_alone=True)


async def test_a_write_in_a_read_session_fails_clearly_and_writes_go_on() -> None:
    """A write in get_read_session() raises WriteInReadSessionError; get_session() still writes."""

    async def write_in_a_read_session() -> None:
        async with get_read_session() as session:
            session.add(Tutorial(name="refused"))

    with pytest.raises(WriteInReadSessionError, match="use get_session"):
        await write_in_a_read_session()
    async with get_session() as session:
        session.add(Tutorial(name="kept"))
    async with get_read_session() as session:
        assert await count_tutorials(session, "kept") == 1
        assert await count_tutorials(session, "refused") == 0


@pytest.mark.commits
async def test_a_read_sessions_connection_is_read_write_again_in_the_pool(
    engine: AsyncEngine, bind_get_session: Callable[..., AsyncEngine]
) -> None:
    """Without a read URL, get_read_session()'s transaction on the primary is read-only; the
    same pooled connection, given back, begins get_session()'s transactions read-write."""
    bind_get_session(settings_for(engine.url, database_pool_size=1, database_max_overflow=0))
    backend = text("SELECT pg_backend_pid()")
    async with get_read_session() as session:
        assert await session.scalar(text("SHOW transaction_read_only")) == "on"
        reader = await session.scalar(backend)
    async with get_session() as session:
        assert await session.scalar(text("SHOW transaction_read_only")) == "off"
        assert await session.scalar(backend) == reader  # the pool's one connection
        session.add(Tutorial(name="written after a read"))
    async with get_read_session() as session:
        assert await count_tutorials(session, "written after a read") == 1


@pytest.mark.commits
@pytest.mark.parametrize("read_alone", [False, True], ids=["get_read_session", "execute_read"])
async def test_reads_fall_back_to_the_primary_while_the_standby_is_down(
    pair: Pair, route: Callable[..., None], caplog: pytest.LogCaptureFixture, read_alone: bool
) -> None:
    """Standby stopped: reads succeed on the primary, with one warning for the outage; they
    go back to the standby when it is back, and that is said once too (info)."""
    route(pair.url, pair.standby_url)
    assert await in_recovery(read_alone)  # leaves a pooled standby connection, about to die
    caplog.set_level(logging.INFO, logger=database.logger.name)
    pair.standby.stop()
    await asyncio.sleep(0.2)  # the loop sees the server close its connection, as a service would
    try:
        during = [await in_recovery(read_alone) for _ in range(3)]
    finally:
        pair.standby.start()
    assert during == [False, False, False]
    assert await in_recovery(read_alone)
    records = [r for r in caplog.records if r.name == database.logger.name]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in records] == [
        ("WARNING", "reads run on the primary"),
        ("INFO", "reads run on the replica again"),
    ]


@pytest.mark.commits
async def test_a_write_on_a_read_only_server_discards_its_connection(
    pair: Pair, route: Callable[..., None]
) -> None:
    """A write that reaches a read-only server (a demoted primary, a stale DNS name) fails as
    a lost connection, and that connection is not reused."""
    route(pair.standby_url)  # as DATABASE_URL: what a failover leaves behind a stale name
    backends = []
    for _ in range(2):  # the pool's one connection, before and after the refused write
        backends.append(await read(text("SELECT pg_backend_pid()")))
        with pytest.raises(DBAPIError) as refused:
            async with get_session() as session:
                session.add(Tutorial(name="refused"))
        assert (refused.value.orig.sqlstate, refused.value.connection_invalidated) == (  # type: ignore[union-attr]
            "25006",
            True,
        )
    assert backends[0] != backends[1]


async def write(name: str) -> str:
    """Save a tutorial with get_session(): "saved", or the error's class."""
    try:
        async with get_session() as session:
            session.add(Tutorial(name=name))
    except SQLAlchemyError as error:
        return type(error).__name__
    return "saved"


@pytest.mark.commits
async def test_after_a_failover_writes_succeed_without_a_restart(
    route: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """Primary crashed, standby promoted: through a host list with
    target_session_attrs=read-write, writes succeed again with the same engine; the time
    from promotion to the first successful write is reported."""
    async with replicated_pair() as pair:
        user, password, database_name = pair.url.username, pair.url.password, pair.url.database
        route(
            f"postgresql://{user}:{password}@127.0.0.1:{pair.url.port},127.0.0.1:"
            f"{pair.standby_url.port}/{database_name}?target_session_attrs=read-write"
        )
        assert await write("before") == "saved"
        pair.primary.stop("immediate")  # a crash
        assert await write("down") != "saved"  # a lost connection: web.py answers 503
        promoted = time.monotonic()
        pair.standby.promote()
        outcomes = []
        while time.monotonic() - promoted < 60 and "saved" not in outcomes:
            outcomes.append(await write("after"))
        elapsed = time.monotonic() - promoted
        assert outcomes[-1] == "saved", outcomes
        async with get_session() as session:
            assert await session.scalar(IN_RECOVERY) is False  # the promoted standby
            assert await count_tutorials(session, "before") == 1
    with capsys.disabled():
        print(f"\nfailover: promotion to first successful write {elapsed:.2f} s")


async def lost_writes(synchronous: bool) -> tuple[int, int]:
    """Acknowledged writes missing on the standby promoted after the primary crashed under a
    write load, the standby STALL seconds behind: (acknowledged, lost)."""
    if sys.platform == "win32":
        pytest.skip("pausing and killing the WAL sender takes POSIX signals")
    async with replicated_pair(synchronous) as pair:
        engine = database.create_engine(Settings(database_url=SecretStr(raw(pair.url))))
        acknowledged: list[int] = []
        add = insert(Tutorial).values(name="acknowledged").returning(Tutorial.tutorial_id)

        async def write() -> None:
            while True:
                try:
                    async with engine.begin() as connection:
                        tutorial_id = (await connection.execute(add)).scalar_one()
                except SQLAlchemyError:
                    return  # the primary is gone
                acknowledged.append(tutorial_id)

        writers = [asyncio.create_task(write()) for _ in range(8)]
        await asyncio.sleep(1)
        # On one machine a standby receives WAL within microseconds: a crash lost nothing in
        # our runs. What leaves a standby behind is a slow or stalled link: the primary's WAL
        # sender paused for the last STALL seconds, then the primary crashed (an immediate
        # shutdown) and the paused sender killed: it never sends what it held back.
        [sender] = await run(pair.url, "SELECT pid FROM pg_stat_replication")
        os.kill(sender, signal.SIGSTOP)
        await asyncio.sleep(STALL)
        crash = asyncio.create_task(asyncio.to_thread(pair.primary.stop, "immediate"))
        await asyncio.sleep(0.2)  # the other processes are gone; the paused one holds on
        os.kill(sender, signal.SIGKILL)
        await crash
        await asyncio.gather(*writers)
        await engine.dispose()
        pair.standby.promote()
        found = select(Tutorial.tutorial_id).where(Tutorial.tutorial_id.in_(acknowledged))
        promoted = create_async_engine(pair.standby_url, poolclass=NullPool)
        async with promoted.connect() as connection:
            kept = len((await connection.scalars(found)).all())
        await promoted.dispose()
        return len(acknowledged), len(acknowledged) - kept


@pytest.mark.commits
@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "remote_apply"])
async def test_what_a_failover_loses(synchronous: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """With synchronous_commit=remote_apply and a synchronous standby, no acknowledged write
    is missing after a crash and promotion; asynchronous replication's loss is reported."""
    acknowledged, lost = await lost_writes(synchronous)
    assert acknowledged > 0
    if synchronous:
        assert lost == 0
    with capsys.disabled():
        mode = "remote_apply" if synchronous else "asynchronous"
        print(
            f"\n{mode}: {lost} of {acknowledged} acknowledged writes lost in a failover"
            f" (the standby {STALL} s behind)"
        )

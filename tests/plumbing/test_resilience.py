"""`get_session()` under load, cancellation, server restarts, PgBouncer, and shutdown."""

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy import URL, event, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core import connections, database
from {{ cookiecutter.project_slug }}.core.connections import CommitCheckingConnection
from {{ cookiecutter.project_slug }}.core.database import create_engine, dispose, get_session
from {{ cookiecutter.project_slug }}.core.migrations import upgrade
from {{ cookiecutter.project_slug }}.repository import save_tutorial, save_tutorials

from ..server_state import count_tutorials
from .conftest import idle_in_transaction, settings_for
from .servers import (
    find_pgbouncer,
    finished,
    running_pgbouncer,
    start_alembic,
)

Bind = Callable[..., AsyncEngine]


async def save_in_own_session(name: str) -> None:
    async with get_session() as session:
        await save_tutorial(session, name)


@pytest.mark.commits
async def test_cancelled_sessions_leave_nothing_behind(
    engine: AsyncEngine, bind_get_session: Bind
) -> None:
    """A default pool's worth of tasks (30) cancelled inside `get_session()` after a flush: no
    rows, no connections held."""
    wide = bind_get_session(settings_for(engine.url), pool_size=30, max_overflow=0)
    flushed = asyncio.Semaphore(0)

    async def save_then_hang(number: int) -> None:
        async with get_session() as session:
            try:
                await save_tutorial(session, f"cancelled {number}")
            finally:  # a save that failed (a full server, say) fails the test, never hangs it
                flushed.release()
            await asyncio.sleep(3600)

    tasks = [asyncio.create_task(save_then_hang(number)) for number in range(30)]
    for _ in tasks:
        await flushed.acquire()
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    assert wide.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await idle_in_transaction(engine) == 0
    assert await count_tutorials(engine, "cancelled ") == 0


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
    bind_get_session(settings_for(engine.url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    async with get_session() as holding:
        await holding.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeoutError, match="QueuePool limit of size 1"):
            await asyncio.wait_for(save_in_own_session("starved"), timeout=10)


@pytest.mark.commits
async def test_dispose_closes_every_pooled_connection() -> None:
    """`dispose()` at shutdown closes the app engine's pooled connections on the server."""

    async def backend_pid() -> int:
        async with database.get_engine().connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.05)  # hold it, so the others open connections of their own
            return int(pid or 0)

    pids = await asyncio.gather(*(backend_pid() for _ in range(3)))
    assert database.get_engine().pool.checkedin() >= 3  # type: ignore[attr-defined]
    await dispose()
    observer = create_engine(settings_for(database.get_engine().url), pool_size=1)
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


@pytest.mark.commits
async def test_a_restarted_server_costs_no_failed_request(
    own_server: tuple[Any, URL], bind_get_session: Bind
) -> None:
    """The server restarts between two uses of a warm pool; the next session just works."""
    server, url = own_server
    engine = bind_get_session(settings_for(url))
    await upgrade(engine)
    await save_in_own_session("before the restart")
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]  # a warm pool
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    await save_in_own_session("after the restart")
    assert await count_tutorials(engine, "after the restart") == 1


@pytest.fixture(scope="module")
def pgbouncer(engine: AsyncEngine) -> Iterator[URL]:
    """PgBouncer in transaction pooling mode in front of the test server; skipped if absent."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed")
    with running_pgbouncer(binary, engine.url) as url:
        yield url


@pytest.mark.commits
async def test_four_hundred_sessions_through_pgbouncer(
    engine: AsyncEngine, pgbouncer: URL, bind_get_session: Bind
) -> None:
    """With DATABASE_PGBOUNCER on, 400 concurrent sessions (ORM and COPY) run with no error."""
    bind_get_session(settings_for(pgbouncer, database_pgbouncer=True))

    async def copy_in_own_session(number: int) -> None:
        async with get_session() as session:
            await save_tutorials(session, [f"bounced copy {number}.{row}" for row in range(10)])

    results = await asyncio.gather(
        *(save_in_own_session(f"bounced {number}") for number in range(300)),
        *(copy_in_own_session(number) for number in range(100)),
        return_exceptions=True,
    )
    assert [result for result in results if result is not None] == []
    assert await count_tutorials(engine, "bounced ") == 300 + 1000


@pytest.mark.commits
async def test_alembic_upgrade_through_pgbouncer(empty_engine: AsyncEngine) -> None:
    """`alembic upgrade head` works through PgBouncer in transaction mode (as the schema's
    owner: the app's role may not create tables)."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed")
    with running_pgbouncer(binary, empty_engine.url) as through_pgbouncer:
        process = await start_alembic(
            through_pgbouncer, "upgrade", "head", DATABASE_PGBOUNCER="true"
        )
        code, output = await finished(process)
    assert code == 0, output


def statements_logged(log: Path, offset: int, pid: int) -> list[str]:
    """What backend `pid` was asked since `offset` in a log with every statement's duration:
    a simple query, a prepare (Parse) or an execute is one round trip each."""
    found = re.findall(
        rf"\[{pid}\] LOG:  duration: \S+ ms  (statement|parse|execute)[^:]*: ([^\n]*)",
        log.read_text()[offset:],
    )
    return [f"{kind}: {query}" for kind, query in found]


SAVE = [
    "statement: BEGIN;",
    "execute: INSERT INTO tutorials (name) VALUES ($1::VARCHAR) RETURNING tutorials.tutorial_id",
    "statement: COMMIT;",
]


@pytest.mark.commits
@pytest.mark.parametrize(
    ("idle", "expected"),
    [(0.0, SAVE), (0.3, [f"statement: {connections.PING}", *SAVE])],
    ids=["warm: BEGIN, INSERT, COMMIT", "idle past the threshold: one ping, kept"],
)
async def test_round_trips_of_a_save(
    own_server: tuple[Any, URL],
    bind_get_session: Bind,
    caplog: pytest.LogCaptureFixture,
    idle: float,
    expected: list[str],
) -> None:
    """A one-row save through get_session() on a warm pool is BEGIN, INSERT … RETURNING and
    COMMIT, as the server logs them, and nothing else; after the connection sat idle past
    database_pool_ping_idle, a ping comes first, it succeeds, and the same connection is kept
    with nothing logged."""
    server, url = own_server
    logged = {"server_settings": {"log_min_duration_statement": "0"}}  # superuser-only setting
    settings = settings_for(url, database_pool_ping_idle=0.2)
    # One connection kept; the migration's lock takes a second for a while.
    engine = bind_get_session(settings, pool_size=1, max_overflow=1, connect_args=logged)
    await upgrade(engine)
    for number in range(3):  # warm: connected, the INSERT prepared and cached
        await save_in_own_session(f"warm-up {number}")
    async with engine.connect() as connection:
        pid = int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)
    await asyncio.sleep(idle)
    log = server.data_dir / "server.log"
    offset = len(log.read_text())
    with caplog.at_level(logging.INFO):
        await save_in_own_session("counted")
    for _ in range(50):  # the server writes its log a moment after answering
        if len(statements := statements_logged(log, offset, pid)) >= len(expected):
            break
        await asyncio.sleep(0.05)
    assert statements == expected  # on the same backend: the connection was kept
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class PingFails(CommitCheckingConnection):
    """A connection whose ping raises what no network error is: as asyncpg 0.32 did on the
    empty query once used as the ping."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109
        if query == connections.PING:
            raise AttributeError("'NoneType' object has no attribute 'decode'")
        return await super().execute(query, *args, timeout=timeout)


@pytest.mark.commits
async def test_a_ping_failing_in_any_way_is_a_silent_reconnect(
    engine: AsyncEngine, bind_get_session: Bind
) -> None:
    """Whatever the ping of an idle connection raises, the pool replaces the connection and
    the save works."""
    settings = settings_for(engine.url, database_pool_ping_idle=0.2)
    breaking = {"connection_class": PingFails}
    bind_get_session(settings, pool_size=1, max_overflow=0, connect_args=breaking)
    assert (pid := await save_and_tell_backend("before idling")) > 0
    await asyncio.sleep(0.3)
    assert await save_and_tell_backend("after idling") != pid  # a new connection
    assert await count_tutorials(engine, "after idling") == 1


async def save_and_tell_backend(name: str) -> int:
    """Save `name` in its own session; the backend's pid that did it."""
    async with get_session() as session:
        await save_tutorial(session, name)
        return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


@pytest.mark.commits
async def test_steady_concurrency_opens_no_connections(engine: AsyncEngine) -> None:
    """20 tasks saving continuously with the default pool: 3,000 saves after warm-up open
    no new connection."""
    opened: list[object] = []

    def count(*connect: object) -> None:
        opened.append(connect)

    async def save_continuously(saves: int) -> None:
        names = iter(range(saves))

        async def worker() -> None:
            for number in names:
                await save_in_own_session(f"steady {number}")

        await asyncio.gather(*(worker() for _ in range(20)))

    await save_continuously(400)  # warm-up: the pool fills
    event.listen(engine.sync_engine, "connect", count)
    try:
        await save_continuously(3000)
    finally:
        event.remove(engine.sync_engine, "connect", count)
    assert len(opened) == 0
    assert await count_tutorials(engine, "steady ") == 3400


class SilentProxy:
    """A TCP proxy to the test server. `vanish()` makes the connections open at that moment go
    silent, as when a NAT or firewall drops them: nothing forwarded, nothing closed. New
    connections are forwarded as before."""

    def __init__(self, target: URL) -> None:
        self.target = target
        self.silenced: set[asyncio.StreamWriter] = set()
        self.open: set[asyncio.StreamWriter] = set()
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> URL:
        self.server = await asyncio.start_server(self.forward, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return self.target.set(host="127.0.0.1", port=port)

    def vanish(self) -> None:
        self.silenced |= self.open

    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection(
            self.target.host, self.target.port
        )
        self.open |= {writer, upstream}
        for source, sink in ((reader, upstream), (upstream_reader, writer)):
            self.pumps.add(asyncio.create_task(self.pump(source, sink)))

    async def pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if sink not in self.silenced:
                sink.write(data)
        if sink not in self.silenced:
            sink.close()

    async def stop(self) -> None:
        self.server.close()
        for task in self.pumps:
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        for writer in self.open:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def silent_proxy(engine: AsyncEngine) -> AsyncIterator[SilentProxy]:
    proxy = SilentProxy(engine.url)
    yield proxy
    await proxy.stop()


# Seconds a save may take when a peer vanished: the short timeouts these tests set, closing the
# dead connection (SQLAlchemy allows that 2 s), a new connection, slack for a busy machine.
# Without the checks it took until TCP gave up: minutes (here: the 30 s wait_for below).
BOUNDED = 10


async def timed_save(name: str) -> tuple[float, BaseException | None]:
    """Seconds a save took, and what it raised (None when it worked)."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(save_in_own_session(name), timeout=30)  # a hang fails the test
    except Exception as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


@pytest.mark.commits
async def test_a_silently_vanished_peer_of_an_idle_connection_costs_no_failure(
    engine: AsyncEngine, silent_proxy: SilentProxy, bind_get_session: Bind
) -> None:
    """A pooled connection went silent while idle past database_pool_ping_idle: the ping
    times out, the pool opens a new connection, and the save works."""
    settings = settings_for(
        await silent_proxy.start(), database_pool_ping_idle=0.2, database_pool_ping_timeout=0.5
    )
    bind_get_session(settings, pool_size=1, max_overflow=0)
    assert await timed_save("before vanishing") == (ANY, None)
    silent_proxy.vanish()
    await asyncio.sleep(0.3)
    seconds, error = await timed_save("after vanishing")
    assert error is None
    assert seconds < BOUNDED
    assert await count_tutorials(engine, "after vanishing") == 1


@pytest.mark.commits
async def test_a_silently_vanished_peer_of_a_busy_connection_costs_one_bounded_failure(
    engine: AsyncEngine, silent_proxy: SilentProxy, bind_get_session: Bind
) -> None:
    """A pooled connection went silent while in steady use (no ping due): the next save fails
    after database_command_timeout, not later; the one after works on a new connection."""
    settings = settings_for(await silent_proxy.start(), database_command_timeout=1)
    bind_get_session(settings, pool_size=1, max_overflow=0)
    assert await timed_save("before vanishing") == (ANY, None)
    silent_proxy.vanish()
    seconds, error = await timed_save("while vanishing")
    assert isinstance(error, TimeoutError), repr(error)
    assert seconds < BOUNDED
    seconds, error = await timed_save("after vanishing")
    assert error is None
    assert await count_tutorials(engine, "after vanishing") == 1


@pytest.mark.commits
async def test_a_vanished_client_releases_its_locks(
    engine: AsyncEngine, silent_proxy: SilentProxy, bind_get_session: Bind
) -> None:
    """A client vanishes (nothing forwarded, nothing closed) inside a transaction holding a
    lock: its statement fails after database_command_timeout, the server ends the abandoned
    transaction after idle_in_transaction_session_timeout (here 1 s, `make db`'s 60 s), the
    lock is free again, and the next save works on a new connection."""
    abandoned_after = {"server_settings": {"idle_in_transaction_session_timeout": "1s"}}
    settings = settings_for(await silent_proxy.start(), database_command_timeout=1)
    bind_get_session(settings, pool_size=1, max_overflow=0, connect_args=abandoned_after)

    async def lock_then_vanish() -> None:
        async with get_session() as session:
            await session.execute(text("LOCK TABLE tutorials IN EXCLUSIVE MODE"))
            silent_proxy.vanish()
            await session.execute(text("SELECT 1"))

    vanished = time.monotonic()
    with pytest.raises(TimeoutError):
        await lock_then_vanish()
    async with engine.connect() as direct:  # the lock is free once the server gave up
        await direct.execute(text("SET lock_timeout = '10s'"))
        await direct.execute(text("LOCK TABLE tutorials IN EXCLUSIVE MODE"))
    released = time.monotonic() - vanished
    seconds, error = await timed_save("after the partition")
    assert error is None
    assert released < 1 + BOUNDED
    assert seconds < BOUNDED
    assert await count_tutorials(engine, "after the partition") == 1


async def test_our_servers_end_abandoned_transactions(own_server: tuple[Any, URL]) -> None:
    """Servers of scripts/local_postgres.py (`make db`, the tests') end a transaction left
    idle after a minute and probe an idle client's socket after 30 s."""
    _, url = own_server
    observer = create_engine(settings_for(url), poolclass=NullPool)
    try:
        async with observer.connect() as connection:
            shown = [
                await connection.scalar(text(f"SHOW {name}"))
                for name in ("idle_in_transaction_session_timeout", "tcp_keepalives_idle")
            ]
    finally:
        await observer.dispose()
    assert shown == ["1min", "30"]  # tcp_keepalives_idle is shown in seconds

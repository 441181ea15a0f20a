"""`execute()` and `execute_read()` beyond the baked contract: every failure raised as
`get_session()` raises it, one round trip as the server counts them, real commits, and a
statement cancelled mid-flight leaving nothing behind."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import URL, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from {{ cookiecutter.project_slug }}.core.connections import is_transient, sqlstate
from {{ cookiecutter.project_slug }}.core.database import execute, execute_read, get_session
from {{ cookiecutter.project_slug }}.core.migrations import upgrade
from {{ cookiecutter.project_slug }}.models import Tutorial

from ..server_state import count_tutorials
from .conftest import fail_inserts, idle_in_transaction, settings_for
from .test_resilience import statements_logged

Bind = Callable[..., AsyncEngine]
INSERT = insert(Tutorial).values(name="fails")
# A failure a trigger raises on INSERT, by its condition name: transient ones, conflicts, bugs.
CONDITIONS = [
    "disk_full",
    "too_many_connections",
    "query_canceled",
    "lock_not_available",
    "serialization_failure",
    "deadlock_detected",
    "admin_shutdown",
    "unique_violation",
    "check_violation",
    "division_by_zero",
]


async def raised(write: Callable[[], Any]) -> SQLAlchemyError:
    with pytest.raises(SQLAlchemyError) as caught:
        await write()
    return caught.value


async def in_a_session() -> None:
    async with get_session() as session:
        await session.execute(INSERT)


@pytest.mark.parametrize("condition", CONDITIONS)
async def test_each_failure_is_raised_as_get_session_raises_it(
    session: AsyncSession, condition: str
) -> None:
    """The same failing INSERT through get_session() and through execute(): the same error
    class, SQLSTATE and transience, so the web layer answers both alike; nothing stored."""
    await fail_inserts(session, condition)
    expected, got = await raised(in_a_session), await raised(lambda: execute(INSERT))
    assert (type(got), sqlstate(got), is_transient(got)) == (
        type(expected),
        sqlstate(expected),
        is_transient(expected),
    )
    assert await count_tutorials(session, "fails") == 0


BACKEND = select(func.pg_backend_pid())


async def backends(engine: AsyncEngine) -> set[int]:
    """The server processes of the tests' database (each one a client connection)."""
    async with engine.connect() as connection:
        found = await connection.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return set(found)


@pytest.mark.commits
async def test_a_statement_timeout_is_raised_as_get_session_raises_it(
    engine: AsyncEngine, bind_get_session: Bind
) -> None:
    """No answer within DATABASE_COMMAND_TIMEOUT: the same StatementTimeoutError (transient),
    and the connection is closed, not used again; the next statement runs on a new one."""
    bind_get_session(settings_for(engine.url, database_command_timeout=0.5), pool_size=1)
    sleep = select(func.pg_sleep(2))

    async def sleep_in_a_session() -> None:
        async with get_session() as session:
            await session.execute(sleep)

    expected = await raised(sleep_in_a_session)
    before = (await execute_read(BACKEND)).scalar_one()
    got = await raised(lambda: execute_read(sleep))
    assert (type(got), is_transient(got)) == (type(expected), True)
    after = (await execute_read(BACKEND)).scalar_one()
    assert after != before


@pytest.mark.commits
async def test_a_statement_commits_for_real(engine: AsyncEngine) -> None:
    """Outside the tests' transaction, what execute() returned from is committed: another
    connection sees it at once, and execute_read() reads it."""
    tutorial_id = (
        await execute(insert(Tutorial).values(name="alone").returning(Tutorial.tutorial_id))
    ).scalar_one()
    assert await count_tutorials(engine, "alone") == 1
    assert (
        await execute_read(select(Tutorial.name).where(Tutorial.tutorial_id == tutorial_id))
    ).scalar_one() == "alone"
    assert await idle_in_transaction(engine) == 0


@pytest.mark.commits
async def test_cancelled_mid_statement_leaves_no_connection_behind(
    engine: AsyncEngine, bind_get_session: Bind
) -> None:
    """A task cancelled while its INSERT waits on a lock: the server cancels the statement (no
    row), the connection is closed rather than pooled, none is left checked out or in a
    transaction, and the next statement runs."""
    bind = bind_get_session(settings_for(engine.url), pool_size=1, max_overflow=0)
    before = (await execute_read(BACKEND)).scalar_one()  # the pool's one connection
    async with engine.connect() as blocker:
        await blocker.execute(text("LOCK TABLE tutorials IN ACCESS EXCLUSIVE MODE"))
        task = asyncio.create_task(execute(insert(Tutorial).values(name="interrupted")))
        await asyncio.sleep(0.3)  # the INSERT reached the server and waits for the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await blocker.rollback()
    assert bind.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert before not in await backends(engine)  # closed, not pooled
    assert await idle_in_transaction(engine) == 0
    assert await count_tutorials(engine, "interrupted") == 0
    assert (await execute_read(BACKEND)).scalar_one() != before
    await execute(insert(Tutorial).values(name="after"))
    assert await count_tutorials(engine, "after") == 1


@pytest.mark.commits
@pytest.mark.parametrize(
    ("run", "logged"),
    [
        (
            lambda: execute(insert(Tutorial).values(name="counted")),
            "execute: INSERT INTO tutorials",
        ),
        (
            lambda: execute_read(select(Tutorial.name).where(Tutorial.tutorial_id == 1)),
            "execute: SELECT tutorials.name",
        ),
    ],
    ids=["execute", "execute_read"],
)
async def test_one_statement_is_one_round_trip(
    own_server: tuple[Any, URL],
    bind_get_session: Bind,
    caplog: pytest.LogCaptureFixture,
    run: Callable[[], Any],
    logged: str,
) -> None:
    """On a warm pool the server is asked the statement and nothing else: no BEGIN, no COMMIT
    (its log of every statement, on the backend the pool keeps)."""
    server, url = own_server
    logged_settings = {"server_settings": {"log_min_duration_statement": "0"}}
    engine = bind_get_session(
        settings_for(url), pool_size=1, max_overflow=1, connect_args=logged_settings
    )
    await upgrade(engine)
    for _ in range(3):  # warm: connected, the statement prepared and cached
        await run()
    async with engine.connect() as connection:
        pid = int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)
    log = server.data_dir / "server.log"
    offset = len(log.read_text())
    with caplog.at_level(logging.INFO):
        await run()
    for _ in range(50):  # the server writes its log a moment after answering
        if statements_logged(log, offset, pid):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # anything after the statement would be logged by now
    statements = statements_logged(log, offset, pid)
    assert [statement[: len(logged)] for statement in statements] == [logged]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

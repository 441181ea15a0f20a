"""`get_session()` beyond the baked contract: every failure kind, with the test fixture and
with real commits, beside SQLAlchemy (COPY), engine-level commits, cancellation mid-statement,
connections always returned."""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from {{ cookiecutter.project_slug }}.core.database import TransactionAbortedError, get_session
from {{ cookiecutter.project_slug }}.models import Tutorial
from {{ cookiecutter.project_slug }}.repository import save_tutorial, save_tutorials

from ..server_state import count_tutorials
from .conftest import idle_in_transaction

Failure = Callable[[AsyncSession], Awaitable[object]]


async def execute(session: AsyncSession, *statements: str) -> None:
    for statement in statements:
        await session.execute(text(statement))


# Statements that fail on the server after the block saved a row, each the way users meet it.
FAILURES: dict[str, Failure] = {
    "division by zero": lambda session: execute(session, "SELECT 1 / 0"),
    "data error": lambda session: execute(session, "SELECT 'not a number'::integer"),
    "unique violation": lambda session: execute(
        session, "INSERT INTO tutorials (tutorial_id, name) VALUES (-1, 'a'), (-1, 'b')"
    ),
    "statement timeout": lambda session: execute(
        session, "SET LOCAL statement_timeout = '10ms'", "SELECT pg_sleep(1)"
    ),
}
# The same code under the test fixture's rolled-back transaction and with real commits.
BOTH_MODES = pytest.mark.parametrize(
    "mode", ["isolated", pytest.param("committing", marks=pytest.mark.commits)]
)


async def save_then_swallow(name: str, failure: Failure) -> None:
    """What a caller does who catches a failed statement and leaves the block normally."""
    async with get_session() as session:
        await save_tutorial(session, name)
        with suppress(Exception):
            await failure(session)


async def save_then_fail_in_a_savepoint(session: AsyncSession, name: str) -> None:
    async with session.begin_nested():
        await save_tutorial(session, name)
        await session.execute(text("SELECT 1 / 0"))


async def save_then_fail(name: str) -> None:
    async with get_session() as session:
        await save_tutorial(session, name)
        raise LookupError(f"failed after saving {name}")


async def test_rolls_back_when_the_task_is_cancelled(session: AsyncSession) -> None:
    """It rolls back when the task running the block is cancelled after a flush."""
    flushed = asyncio.Event()

    async def save_then_wait() -> None:
        async with get_session() as block:
            await save_tutorial(block, "cancelled")
            flushed.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(save_then_wait())
    await flushed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count_tutorials(session, "cancelled") == 0


@BOTH_MODES
@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_a_caught_failure_is_never_a_silent_loss(mode: str, failure: Failure) -> None:
    """A statement fails, the caller catches it and leaves the block: an error, no rows."""
    with pytest.raises(TransactionAbortedError, match="nothing was committed"):
        await save_then_swallow(f"lost {mode}", failure)
    async with get_session() as session:
        assert await count_tutorials(session, f"lost {mode}") == 0


@BOTH_MODES
async def test_a_caught_failure_beside_sqlalchemy_is_never_a_silent_loss(
    engine: AsyncEngine, mode: str
) -> None:
    """COPY runs on the raw driver: its caught failure makes the COMMIT (or, under the test
    fixture, the savepoint release) refuse, with the same error."""
    with pytest.raises(TransactionAbortedError, match="nothing was committed"):
        await save_then_swallow("lost beside", lambda session: save_tutorials(session, ["x" * 256]))
    assert await count_tutorials(engine, "lost beside") == 0


@BOTH_MODES
async def test_a_savepoint_lets_a_statement_fail_and_the_block_go_on(mode: str) -> None:
    """The supported way: `begin_nested()` undoes just the failed part; the rest commits."""
    async with get_session() as session:
        await save_tutorial(session, f"kept {mode} 1")
        with pytest.raises(DBAPIError):
            await save_then_fail_in_a_savepoint(session, f"undone {mode}")
        await save_tutorial(session, f"kept {mode} 2")
    async with get_session() as session:
        assert await count_tutorials(session, f"kept {mode}") == 2
        assert await count_tutorials(session, f"undone {mode}") == 0


@pytest.mark.commits
async def test_a_failure_elsewhere_does_not_abort_this_block(engine: AsyncEngine) -> None:
    """Another task's caught failure, during this block and on another connection, leaves
    this block's transaction alone: it commits."""
    failed = asyncio.Event()

    async def save_then_wait_for_the_failure() -> None:
        async with get_session() as session:
            await save_tutorial(session, "unaffected")
            await failed.wait()

    async def fail_and_swallow() -> None:
        async with get_session() as session:
            with suppress(DBAPIError):
                await session.execute(text("SELECT 1 / 0"))
            failed.set()

    saving = asyncio.create_task(save_then_wait_for_the_failure())
    with pytest.raises(TransactionAbortedError):
        await fail_and_swallow()
    await saving
    assert await count_tutorials(engine, "unaffected") == 1


async def insert_then_swallow(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(Tutorial).values(name=name))
        with suppress(DBAPIError):
            await connection.execute(text("SELECT 1 / 0"))


@pytest.mark.commits
async def test_engine_level_commits_refuse_an_aborted_transaction(engine: AsyncEngine) -> None:
    """Outside sessions too (`engine.begin()`), COMMIT after a caught failure raises."""
    with pytest.raises(DBAPIError, match="nothing was committed"):
        await insert_then_swallow(engine, "engine level")
    assert await count_tutorials(engine, "engine level") == 0


@pytest.mark.commits
async def test_returns_the_connection_to_the_pool(engine: AsyncEngine) -> None:
    """Every path out of the block, clean or raising, gives the connection back."""
    async with get_session() as session:
        await save_tutorial(session, "kept")
    with pytest.raises(LookupError):
        await save_then_fail("dropped")
    with pytest.raises(TransactionAbortedError):
        await save_then_swallow("swallowed", FAILURES["division by zero"])
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await count_tutorials(engine, "kept") == 1
    assert await count_tutorials(engine, "dropped") == 0


@pytest.mark.commits
async def test_cancelled_during_a_query_leaves_no_open_transaction(engine: AsyncEngine) -> None:
    """A task cancelled mid-statement leaves no row, no checked-out connection, no idle txn."""
    flushed = asyncio.Event()

    async def save_then_sleep() -> None:
        async with get_session() as session:
            await save_tutorial(session, "interrupted")
            flushed.set()
            await session.execute(text("SELECT pg_sleep(2)"))

    task = asyncio.create_task(save_then_sleep())
    await flushed.wait()
    await asyncio.sleep(0.1)  # let the sleep statement reach the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await count_tutorials(engine, "interrupted") == 0
    assert await idle_in_transaction(engine) == 0

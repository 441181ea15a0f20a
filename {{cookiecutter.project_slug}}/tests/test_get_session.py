"""`get_session()`: commit on a clean exit, rollback on any exception, connections returned."""

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from {{ cookiecutter.project_slug }}.database import get_session
from {{ cookiecutter.project_slug }}.repository import save_tutorial

from .server_state import count_tutorials, idle_in_transaction


@pytest.mark.usefixtures("isolated_get_session")
async def test_commits_when_the_block_exits_cleanly(connection: AsyncConnection) -> None:
    """It commits what the block did, with no commit call in the block."""
    async with get_session() as session:
        await save_tutorial(session, "committed")
    assert await count_tutorials(connection, "committed") == 1


@pytest.mark.usefixtures("isolated_get_session")
async def test_an_explicit_commit_inside_still_works(connection: AsyncConnection) -> None:
    """The tutorial's style, `await session.commit()` inside the block, keeps working."""
    async with get_session() as session:
        await save_tutorial(session, "first")
        await session.commit()
        await save_tutorial(session, "second")
    assert await count_tutorials(connection, "first") == 1
    assert await count_tutorials(connection, "second") == 1


async def save_then_fail(name: str) -> None:
    async with get_session() as session:
        await save_tutorial(session, name)
        raise LookupError(f"failed after saving {name}")


@pytest.mark.usefixtures("isolated_get_session")
async def test_rolls_back_when_the_block_raises(connection: AsyncConnection) -> None:
    """It rolls back when the block raises, and the error reaches the caller unchanged."""
    with pytest.raises(LookupError, match="failed after saving doomed"):
        await save_then_fail("doomed")
    assert await count_tutorials(connection, "doomed") == 0


@pytest.mark.usefixtures("isolated_get_session")
async def test_rolls_back_when_the_task_is_cancelled(connection: AsyncConnection) -> None:
    """It rolls back when the task running the block is cancelled after a flush."""
    flushed = asyncio.Event()

    async def save_then_wait() -> None:
        async with get_session() as session:
            await save_tutorial(session, "cancelled")
            flushed.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(save_then_wait())
    await flushed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count_tutorials(connection, "cancelled") == 0


async def test_returns_the_connection_to_the_pool(committed: AsyncEngine) -> None:
    """Every path out of the block, clean or raising, gives the connection back."""
    async with get_session() as session:
        await save_tutorial(session, "kept")
    with pytest.raises(LookupError):
        await save_then_fail("dropped")
    assert committed.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await count_tutorials(committed, "kept") == 1
    assert await count_tutorials(committed, "dropped") == 0


async def test_cancelled_during_a_query_leaves_no_open_transaction(committed: AsyncEngine) -> None:
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
    assert committed.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await count_tutorials(committed, "interrupted") == 0
    assert await idle_in_transaction(committed) == 0

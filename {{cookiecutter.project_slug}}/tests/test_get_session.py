"""`get_session()`'s contract: commit on a clean exit, rollback on an exception, and an error,
never a silent loss, when a failed statement was caught inside the block."""

from contextlib import suppress

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.project_slug }}.core.database import TransactionAbortedError, get_session
from {{ cookiecutter.project_slug }}.repository import save_tutorial

from .server_state import count_tutorials


async def test_commits_when_the_block_exits_cleanly(session: AsyncSession) -> None:
    """It commits what the block did, with no commit call in the block."""
    async with get_session() as block:
        await save_tutorial(block, "committed")
    assert await count_tutorials(session, "committed") == 1


async def test_an_explicit_commit_inside_still_works(session: AsyncSession) -> None:
    """The tutorial's style, `await session.commit()` inside the block, keeps working."""
    async with get_session() as block:
        await save_tutorial(block, "first")
        await block.commit()
        await save_tutorial(block, "second")
    assert await count_tutorials(session, "first") == 1
    assert await count_tutorials(session, "second") == 1


async def save_then_raise(name: str) -> None:
    async with get_session() as session:
        await save_tutorial(session, name)
        raise LookupError(f"failed after saving {name}")


async def test_rolls_back_when_the_block_raises(session: AsyncSession) -> None:
    """It rolls back when the block raises, and the error reaches the caller unchanged."""
    with pytest.raises(LookupError, match="failed after saving doomed"):
        await save_then_raise("doomed")
    assert await count_tutorials(session, "doomed") == 0


async def save_then_swallow(name: str) -> None:
    """What a caller does who catches a failed statement and leaves the block normally."""
    async with get_session() as session:
        await save_tutorial(session, name)
        with suppress(DBAPIError):
            await session.execute(text("SELECT 1 / 0"))


async def test_a_caught_failure_is_an_error_not_a_silent_loss(session: AsyncSession) -> None:
    """A statement fails, the block catches it and exits normally: PostgreSQL has aborted the
    transaction, so nothing can be committed, and the block raises instead of losing it."""
    with pytest.raises(TransactionAbortedError, match="nothing was committed"):
        await save_then_swallow("lost")
    assert await count_tutorials(session, "lost") == 0


async def save_then_fail_in_a_savepoint(session: AsyncSession, name: str) -> None:
    async with session.begin_nested():
        await save_tutorial(session, name)
        await session.execute(text("SELECT 1 / 0"))


async def test_a_savepoint_lets_a_statement_fail_and_the_block_go_on(
    session: AsyncSession,
) -> None:
    """The supported way: `begin_nested()` undoes just the failed part; the rest commits."""
    async with get_session() as block:
        await save_tutorial(block, "kept 1")
        with pytest.raises(DBAPIError):
            await save_then_fail_in_a_savepoint(block, "undone")
        await save_tutorial(block, "kept 2")
    assert await count_tutorials(session, "kept") == 2
    assert await count_tutorials(session, "undone") == 0

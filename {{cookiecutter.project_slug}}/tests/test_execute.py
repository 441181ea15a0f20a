"""`execute()`'s contract: one statement, committed on its own when it returns; a second
statement in the same call is refused, and so is a call inside a `get_session()` block."""

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.project_slug }}.core.database import (
    StatementInSessionError,
    WriteInReadSessionError,
    execute,
    execute_read,
    get_session,
)
from {{ cookiecutter.project_slug }}.models import Tutorial

from .server_state import count_tutorials


async def test_a_statement_is_stored_without_a_session(session: AsyncSession) -> None:
    """No session, no commit call: the row is stored when execute() returns."""
    result = await execute(insert(Tutorial).values(name="alone").returning(Tutorial.tutorial_id))
    tutorial_id = result.scalar_one()
    assert await count_tutorials(session, "alone") == 1
    read = await execute_read(select(Tutorial.name).where(Tutorial.tutorial_id == tutorial_id))
    assert read.scalar_one() == "alone"


async def test_a_second_statement_is_refused(session: AsyncSession) -> None:
    """Two statements in one string, or one with a list of parameter sets (a statement per
    item), are refused before anything is stored."""
    two = "INSERT INTO tutorials (name) VALUES ('one'); INSERT INTO tutorials (name) VALUES ('two')"
    with pytest.raises(ProgrammingError, match="multiple commands"):
        await execute(text(two))
    with pytest.raises(TypeError, match="one mapping"):
        await execute(insert(Tutorial), [{"name": "one"}, {"name": "two"}])  # type: ignore[call-overload]
    assert await count_tutorials(session, "") == 0


async def test_inside_a_get_session_block_it_is_refused(session: AsyncSession) -> None:
    """In a block whose statements commit together, a statement that would commit on its own
    is an error; `session.execute()` is the way there."""
    async with get_session() as block:
        with pytest.raises(StatementInSessionError, match="use session"):
            await execute(insert(Tutorial).values(name="beside the block"))
        await block.execute(insert(Tutorial).values(name="in the block"))
    assert await count_tutorials(session, "beside") == 0
    assert await count_tutorials(session, "in the block") == 1


async def test_a_read_takes_a_select_only(session: AsyncSession) -> None:
    """execute_read() refuses a write before sending it."""
    with pytest.raises(WriteInReadSessionError, match="select"):
        await execute_read(insert(Tutorial).values(name="refused"))  # type: ignore[arg-type]
    assert await count_tutorials(session, "refused") == 0


async def test_a_failed_statement_leaves_the_test_going(session: AsyncSession) -> None:
    """A statement that fails raises as in a session; the test's own work goes on (in a test
    the statement runs in a savepoint of the test's transaction)."""
    await session.execute(insert(Tutorial).values(tutorial_id=-1, name="first"))
    with pytest.raises(IntegrityError):
        await execute(insert(Tutorial).values(tutorial_id=-1, name="again"))
    assert await count_tutorials(session, "first") == 1

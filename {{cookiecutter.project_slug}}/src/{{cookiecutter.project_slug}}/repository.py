"""Reading and writing tutorials: one statement on its own (`execute()`, `execute_read()`),
or inside the caller's session and transaction (`get_session()`)."""

from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import Row, Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from .core.database import execute, execute_read
from .models import Tutorial

# The hot routes' statements (routes.py), built once: each call only binds its values.
TUTORIALS = cast(Table, Tutorial.__table__)
INSERT_TUTORIAL = insert(TUTORIALS).returning(TUTORIALS.c.tutorial_id)
SELECT_TUTORIAL = select(TUTORIALS.c.tutorial_id, TUTORIALS.c.name).where(
    TUTORIALS.c.tutorial_id == bindparam("tutorial_id")
)


async def save_tutorial(session: AsyncSession, name: str) -> Tutorial:
    """Add one tutorial and return it, `tutorial_id` set; committing is the caller's."""
    tutorial = Tutorial(name=name)
    session.add(tutorial)
    await session.flush()  # sends the INSERT: the database assigns tutorial_id
    return tutorial


async def insert_tutorial(name: str) -> int:
    """Insert one tutorial, committed on its own, and return its `tutorial_id`.

    One statement, so one round trip (`execute()`), in Core: POST /tutorials is a hot route.
    Inside a `get_session()` block, use `save_tutorial()`.
    """
    return int((await execute(INSERT_TUTORIAL, {"name": name})).scalar_one())


async def find_tutorial(tutorial_id: int) -> Row[int, str] | None:
    """The tutorial's `tutorial_id` and `name` as a row, or None: one read on its own.

    One round trip (`execute_read()`: read-only, on the replica if there is one), in Core:
    GET /tutorials/{id} is a hot route. Use `session.get(Tutorial, tutorial_id)` for an
    object to change or follow relationships from.
    """
    return (await execute_read(SELECT_TUTORIAL, {"tutorial_id": tutorial_id})).first()


async def list_tutorials(session: AsyncSession) -> Sequence[Tutorial]:
    """Every tutorial, oldest first."""
    result = await session.scalars(select(Tutorial).order_by(Tutorial.tutorial_id))
    return result.all()


async def save_tutorials(session: AsyncSession, names: Iterable[str]) -> int:
    """Save many tutorials with PostgreSQL COPY on the session's own connection.

    COPY runs inside the session's transaction, so it commits or rolls back with the rest of
    the block. It skips the ORM (no objects come back), which makes it the fast path for bulk.
    """
    records = [(name,) for name in names]
    await session.flush()  # pending ORM changes go first, in the order the caller made them
    connection = await session.connection()
    asyncpg_connection = (await connection.get_raw_connection()).driver_connection
    assert asyncpg_connection is not None  # a checked-out connection always has one
    await asyncpg_connection.copy_records_to_table(
        Tutorial.__tablename__, columns=["name"], records=records
    )
    return len(records)

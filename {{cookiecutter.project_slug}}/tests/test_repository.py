"""The repository: save and list tutorials inside the caller's transaction."""

from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.project_slug }}.repository import (
    find_tutorial,
    insert_tutorial,
    list_tutorials,
    save_tutorial,
    save_tutorials,
)


async def test_save_tutorial_assigns_an_id(session: AsyncSession) -> None:
    """It returns the stored tutorial with its database-assigned id."""
    tutorial = await save_tutorial(session, "Connect to PostgreSQL")
    assert isinstance(tutorial.tutorial_id, int)
    assert tutorial.name == "Connect to PostgreSQL"


async def test_list_tutorials_returns_them_oldest_first(session: AsyncSession) -> None:
    """It lists every saved tutorial in insertion order."""
    for name in ["first", "second", "third"]:
        await save_tutorial(session, name)
    assert [tutorial.name for tutorial in await list_tutorials(session)] == [
        "first",
        "second",
        "third",
    ]


async def test_save_tutorials_copies_inside_the_transaction(session: AsyncSession) -> None:
    """It bulk-saves with COPY after earlier pending objects, in the session's transaction."""
    await save_tutorial(session, "before")
    names = [f"bulk {number}" for number in range(1000)]
    assert await save_tutorials(session, names) == 1000
    listed = [tutorial.name for tutorial in await list_tutorials(session)]
    assert listed == ["before", *names]
    await session.rollback()
    assert await list_tutorials(session) == []


async def test_insert_tutorial_returns_the_id_inside_the_transaction(
    session: AsyncSession,
) -> None:
    """The Core fast path stores the row, returns its id, and rolls back with the session."""
    tutorial_id = await insert_tutorial(session, "fast")
    assert [(t.tutorial_id, t.name) for t in await list_tutorials(session)] == [
        (tutorial_id, "fast")
    ]
    await session.rollback()
    assert await list_tutorials(session) == []


async def test_find_tutorial_reads_the_two_columns_or_none(session: AsyncSession) -> None:
    """The Core read gives the stored id and name as a row, and None for a missing id."""
    tutorial_id = await insert_tutorial(session, "found")
    assert await find_tutorial(session, tutorial_id) == (tutorial_id, "found")
    assert await find_tutorial(session, tutorial_id + 1) is None

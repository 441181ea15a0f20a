"""The repository: tutorials saved and listed in the caller's transaction, or one statement
on its own."""

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


async def test_insert_tutorial_commits_on_its_own(session: AsyncSession) -> None:
    """The one-statement write stores the row and returns its id, with no session of its own
    (in a test, what it commits is undone with the test)."""
    tutorial_id = await insert_tutorial("fast")
    assert [(t.tutorial_id, t.name) for t in await list_tutorials(session)] == [
        (tutorial_id, "fast")
    ]


async def test_find_tutorial_reads_the_two_columns_or_none() -> None:
    """The one-statement read gives the stored id and name as a row, and None for a missing id."""
    tutorial_id = await insert_tutorial("found")
    assert await find_tutorial(tutorial_id) == (tutorial_id, "found")
    assert await find_tutorial(tutorial_id + 1) is None

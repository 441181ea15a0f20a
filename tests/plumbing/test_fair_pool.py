"""The pool serves tasks waiting for a connection in arrival order, and loses none."""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.core.fair_pool import FairQueue

from .conftest import settings_for


@pytest.fixture
async def one_connection(engine: AsyncEngine) -> AsyncIterator[Callable[..., AsyncEngine]]:
    """A function building the app's kind of engine with a pool of one connection."""
    engines: list[AsyncEngine] = []

    def build(**options: object) -> AsyncEngine:
        options = {"pool_size": 1, "max_overflow": 0, **options}
        engines.append(built := create_engine(settings_for(engine.url), **options))
        return built

    yield build
    for built in engines:
        await built.dispose()


def waiters(engine: AsyncEngine) -> int:
    """The tasks waiting for a connection of `engine`'s pool."""
    return len(engine.pool._pool.waiters)  # type: ignore[attr-defined]


async def waiting(engine: AsyncEngine, count: int) -> None:
    """Until `count` tasks wait for `engine`'s connection (5 s at most)."""
    for _ in range(500):
        if waiters(engine) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{waiters(engine)} tasks wait, not {count}")


async def take_in_turn(engine: AsyncEngine, name: str, served: list[str]) -> None:
    """Take a connection, note `name` as served, give it back."""
    async with engine.connect() as connection:
        served.append(name)
        await connection.execute(text("SELECT 1"))


async def test_waiters_are_served_in_arrival_order(
    one_connection: Callable[..., AsyncEngine],
) -> None:
    """Two tasks wait for the one connection; its holder gives it back and at once asks
    again: the waiters come first, in the order they arrived, then the holder. (SQLAlchemy
    2.1.9's own pool lets the holder take it again, ahead of both, and serves the first
    waiter last; 2.1.0's served this case in order: no stock order is asserted.)"""
    engine = one_connection()
    assert isinstance(engine.pool._pool, FairQueue)  # type: ignore[attr-defined]  # the hook
    served: list[str] = []
    holder = await engine.connect()
    await holder.execute(text("SELECT 1"))
    tasks = []
    for queued, name in enumerate(("first", "second"), start=1):
        tasks.append(asyncio.create_task(take_in_turn(engine, name, served)))
        await waiting(engine, queued)  # queued before the next one
    await holder.close()  # no await between giving it back and asking again:
    await take_in_turn(engine, "holder again", served)
    await asyncio.gather(*tasks)
    assert served == ["first", "second", "holder again"]


async def test_a_waiter_cancelled_while_waiting_loses_no_connection(
    one_connection: Callable[..., AsyncEngine],
) -> None:
    """One waiter is cancelled while it waits, another just after the connection was handed
    to it: the connection goes on to the next waiter, then back to the pool."""
    engine = one_connection()
    served: list[str] = []
    holder = await engine.connect()
    tasks = [
        asyncio.create_task(take_in_turn(engine, name, served))
        for name in ("cancelled waiting", "cancelled when served", "served")
    ]
    await waiting(engine, 3)
    tasks[0].cancel()
    await asyncio.sleep(0.05)
    await holder.close()  # handed to the second task, which is cancelled before it runs
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(result) for result in results] == [
        asyncio.CancelledError,
        asyncio.CancelledError,
        type(None),
    ]
    assert served == ["served"]
    assert (engine.pool.checkedout(), engine.pool.checkedin()) == (0, 1)  # type: ignore[attr-defined]


async def test_a_waiter_past_the_pool_timeout_gets_the_pools_error(
    one_connection: Callable[..., AsyncEngine],
) -> None:
    """A waiter gives up after pool_timeout with the pool's own TimeoutError (the web service
    answers it 503); the connection, given back later, stays in the pool for the next."""
    engine = one_connection(pool_timeout=0.2)
    holder: AsyncConnection = await engine.connect()
    with pytest.raises(PoolTimeoutError, match="QueuePool limit of size 1 overflow 0"):
        await asyncio.wait_for(engine.connect(), timeout=10)
    await holder.close()
    assert waiters(engine) == 0
    served: list[str] = []
    await take_in_turn(engine, "next", served)
    assert (served, engine.pool.checkedin()) == (["next"], 1)  # type: ignore[attr-defined]

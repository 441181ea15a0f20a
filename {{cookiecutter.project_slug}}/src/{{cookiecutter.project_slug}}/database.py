"""One engine, one session factory, and `get_session()`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from .settings import Settings, get_settings


def create_engine(settings: Settings, **options: Any) -> AsyncEngine:
    """An asyncpg engine configured by `settings` (`options` win); connects on first use."""
    if settings.database_pgbouncer:
        # PgBouncer in transaction mode may run each transaction on another server connection,
        # where a prepared statement from elsewhere can exist under the same name: cache none
        # and name each one uniquely (sqlalchemy#6467, #10226). PgBouncer pools, so we don't.
        return create_async_engine(
            settings.database_url_object.update_query_dict({"prepared_statement_cache_size": "0"}),
            echo=settings.database_echo,
            poolclass=NullPool,
            connect_args={
                **settings.database_connect_args,
                "statement_cache_size": 0,
                "prepared_statement_name_func": lambda: f"__asyncpg_{uuid4()}__",
            },
        )
    pooling: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
        # One cheap round trip per checkout, so a restarted server costs no failed request.
        "pool_pre_ping": True,
    }
    if options.get("poolclass") is NullPool:
        pooling = {}  # nothing to size or recycle
    return create_async_engine(
        settings.database_url_object,
        echo=settings.database_echo,
        # What the URL asks that asyncpg takes only as arguments: see settings.connect_args.
        connect_args=settings.database_connect_args,
        **{**pooling, **options},
    )


engine = create_engine(get_settings())
# expire_on_commit=False: objects stay loaded after commit, so reading an attribute later does
# no implicit IO (which would fail outside the greenlet bridge with MissingGreenlet).
session_factory = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def get_session() -> AsyncIterator[AsyncSession]:
    """Yield a session that commits when the block exits cleanly and rolls back when it raises.

    An explicit `await session.commit()` inside the block works too. When the block raises
    (cancellation included), leaving `async with` closes the session without committing: the
    close is shielded from cancellation and returns the connection to the pool, which rolls it
    back, or discards it if a cancelled statement left it unusable. A rollback awaited here
    instead would fail on such a connection and mask the original error.
    """
    async with session_factory() as session:
        yield session
        await session.commit()


async def dispose() -> None:
    """Close every pooled connection; call at shutdown (end of a script, app lifespan exit)."""
    await engine.dispose()

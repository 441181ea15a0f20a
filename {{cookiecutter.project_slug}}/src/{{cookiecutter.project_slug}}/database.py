"""One engine, one session factory, and `get_session()`."""

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.util import await_only

from .settings import Settings, get_settings

# SQLSTATE in_failed_sql_transaction: "current transaction is aborted".
IN_FAILED_SQL_TRANSACTION = "25P02"
# Set in a connection's info while its transaction is aborted by a failed statement.
ABORTED = "transaction_aborted"
# Set in a pooled connection's info when it goes back to the pool: how long it sat idle.
CHECKED_IN_AT = "checked_in_at"


ABORTED_MESSAGE = (
    "A statement in this get_session() block failed and was caught, which aborted the "
    "transaction: nothing was committed. Run statements that may fail inside "
    "`async with session.begin_nested():`, or let the error propagate."
)


class TransactionAbortedError(SQLAlchemyError):
    """The block left cleanly, but a statement in it had failed: PostgreSQL had aborted the
    transaction, so the COMMIT rolled everything back and nothing was committed."""


class CommitCheckingConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """asyncpg's connection, refusing to report a COMMIT that the server turned into ROLLBACK.

    After a failed statement PostgreSQL ignores everything until the transaction ends, and
    answers COMMIT with the command tag ROLLBACK and no error: every write of the transaction
    is gone while the caller believes it stored them. This raises the error PostgreSQL itself
    gives for other commands in that state, so every commit path (sessions, `engine.begin()`,
    raw driver work such as COPY) fails loudly, as a savepoint release already does.
    """

    # The signature is asyncpg's own, timeout parameter included.
    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109
        status: str = await super().execute(query, *args, timeout=timeout)
        if status == "ROLLBACK" and query.lstrip()[:6].upper() == "COMMIT":
            raise asyncpg.exceptions.InFailedSQLTransactionError(
                "COMMIT was answered with ROLLBACK: an earlier statement failed, which aborted "
                "the transaction, and nothing was committed"
            )
        return status


# Statements that failed inside a transaction, in this process: get_session() looks for an
# aborted transaction (which costs a trip through SQLAlchemy's greenlet bridge, ~5 % of a
# save's CPU) only when this moved during its block.
failed_statements = 0


def mark_aborted(context: ExceptionContext) -> None:
    """A statement failed inside a transaction: PostgreSQL now ignores all but its end."""
    global failed_statements
    if context.connection is not None and context.connection.in_transaction():
        context.connection.info[ABORTED] = True
        failed_statements += 1


def clear_aborted(connection: Connection, *_: Any) -> None:
    """A transaction began or ended, or a savepoint was rolled back: usable again."""
    if not connection.invalidated:  # an invalidated one (cancelled mid-query) is discarded
        connection.info.pop(ABORTED, None)


def track_aborted_transactions(engine: AsyncEngine) -> AsyncEngine:
    event.listen(engine.sync_engine, "handle_error", mark_aborted)
    for ending in ("begin", "commit", "rollback", "rollback_savepoint"):
        event.listen(engine.sync_engine, ending, clear_aborted)
    return engine


def check_pooled_connections(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """Hand out no connection known to be dead, at no cost to a busy pool.

    A connection whose socket the driver saw close (a restarted server, a killed backend) is
    discarded at checkout for free. One that sat idle longer than `database_pool_ping_idle`,
    long enough for a NAT or proxy to drop it silently, is first pinged: one round trip,
    bounded by `database_pool_ping_timeout`. The pool replaces a rejected connection with a
    new one, so the caller never sees the failure. This replaces `pool_pre_ping`, which cost
    three round trips (BEGIN, a query, ROLLBACK) on every checkout.
    """

    def checked_in(_: Any, record: ConnectionPoolEntry) -> None:
        record.info[CHECKED_IN_AT] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _: Any) -> None:
        driver = record.driver_connection
        if driver is None or driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")
        idle = time.monotonic() - record.info.get(CHECKED_IN_AT, math.inf)
        if idle > settings.database_pool_ping_idle:
            try:
                # A simple query: one round trip, no transaction, fine behind PgBouncer.
                await_only(driver.execute(";", timeout=settings.database_pool_ping_timeout))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                raise DisconnectionError(f"a pooled connection idle {idle:.0f} s: {e!r}") from e

    event.listen(engine.sync_engine, "checkin", checked_in)
    event.listen(engine.sync_engine, "checkout", checked_out)
    return engine


def discard_timed_out(context: ExceptionContext) -> None:
    """A statement timed out: the server may be gone, so the connection is not reused."""
    if isinstance(context.original_exception, TimeoutError):
        context.is_disconnect = True


def create_engine(settings: Settings, **options: Any) -> AsyncEngine:
    """An asyncpg engine configured by `settings` (`options` win); connects on first use."""
    connect_args: dict[str, Any] = {
        # What the URL asks that asyncpg takes only as arguments: see settings.connect_args.
        **settings.database_connect_args,
        "connection_class": CommitCheckingConnection,
        "command_timeout": settings.database_command_timeout or None,
    }
    url = settings.database_url_object
    if settings.database_pgbouncer:
        # PgBouncer in transaction mode may run each transaction on another server connection,
        # where a prepared statement from elsewhere can exist under the same name: cache none
        # and name each one uniquely (sqlalchemy#6467, #10226). Our pool of client connections
        # to PgBouncer stays: opening one per session was 5x slower.
        connect_args |= {
            "statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid4()}__",
        }
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    pooling: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
    }
    if options.get("poolclass") is NullPool:
        pooling = {}  # nothing to size or recycle
    engine = create_async_engine(
        url,
        echo=settings.database_echo,
        connect_args=connect_args | options.pop("connect_args", {}),
        **{**pooling, **options},
    )
    event.listen(engine.sync_engine, "handle_error", discard_timed_out)
    return track_aborted_transactions(check_pooled_connections(engine, settings))


engine = create_engine(get_settings())
# expire_on_commit=False: objects stay loaded after commit, so reading an attribute later does
# no implicit IO (which would fail outside the greenlet bridge with MissingGreenlet).
session_factory = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def get_session() -> AsyncIterator[AsyncSession]:
    """Yield a session that commits when the block exits cleanly and rolls back when it raises.

    An explicit `await session.commit()` inside the block works too. To let a statement fail
    and carry on, run it in a savepoint: `async with session.begin_nested(): ...` rolls back
    just that part when it raises. A failed statement caught *outside* a savepoint has aborted
    the whole transaction: leaving the block then raises `TransactionAbortedError`, and
    nothing of the block is committed.

    When the block raises (cancellation included), leaving `async with` closes the session
    without committing: the close is shielded from cancellation and returns the connection to
    the pool, which rolls it back, or discards it if a cancelled statement left it unusable.
    A rollback awaited here instead would fail on such a connection and mask the original
    error. The COMMIT itself is not shielded, so a cancelled task (a timeout, a client gone)
    never waits on a slow or unreachable server; but a cancellation that arrives while COMMIT
    is in flight has an unknown outcome: the server may have committed. Where that matters,
    make the write idempotent or check for it afterwards.
    """
    failed_before = failed_statements
    async with session_factory() as session:
        yield session
        # Known aborted: send no COMMIT; leaving `async with` rolls back, as on any error.
        if (
            failed_statements != failed_before
            and session.in_transaction()
            and (await session.connection()).info.get(ABORTED)
        ):
            raise TransactionAbortedError(ABORTED_MESSAGE)
        try:
            await session.commit()
        except DBAPIError as error:  # aborted beside SQLAlchemy (raw driver work): COMMIT says
            if getattr(error.orig, "sqlstate", None) != IN_FAILED_SQL_TRANSACTION:
                raise
            raise TransactionAbortedError(ABORTED_MESSAGE) from error


async def dispose() -> None:
    """Close every pooled connection; call at shutdown (end of a script, app lifespan exit)."""
    await engine.dispose()

"""What every engine does with its connections: a COMMIT the server turned into ROLLBACK is
an error, a transaction aborted by a failed statement is known, a pooled connection that
died is never handed out, one whose statement timed out is not reused, and a server that
cannot be reached or does not answer is a SQLAlchemy error like every other database failure
(never a bare `OSError` that callers could not tell from their own)."""

import math
import time
from contextvars import ContextVar
from typing import Any
from weakref import WeakSet

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext, Transaction
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from ..settings import Settings
from . import logs

# SQLSTATE in_failed_sql_transaction: "current transaction is aborted".
IN_FAILED_SQL_TRANSACTION = "25P02"
# SQLSTATE read_only_sql_transaction: a write in a read-only transaction, which on a
# connection of the primary's engine means the server became read-only (demoted, fenced).
READ_ONLY_SQL_TRANSACTION = "25006"
# Set in a pooled connection's info when it goes back to the pool: how long it sat idle.
CHECKED_IN_AT = "checked_in_at"
# The idle ping: a real query, one round trip in the simple protocol (no prepared statement,
# fine behind PgBouncer). Not the empty query ";": asyncpg 0.32 raises AttributeError on its
# reply, which made every ping fail.
PING = "SELECT 1"


class ConnectError(SQLAlchemyError, OSError):
    """The server could not be reached (refused, unresolvable, or no answer within the connect
    timeout). An `OSError` too, as the driver's own error was."""


class StatementTimeoutError(SQLAlchemyError, TimeoutError):
    """The server did not answer a statement within `database_command_timeout`; the connection
    is discarded. A `TimeoutError` too, as the driver's own error was."""


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE of the driver error that SQLAlchemy wrapped in `error`, or ""."""
    return str(getattr(getattr(error, "orig", None), "sqlstate", None) or "")


# What a retry a moment later may succeed at: the database is down, starting, stopping,
# failing over, out of room or connection slots, or the statement lost a race. By SQLSTATE
# class: connection exceptions, insufficient resources (disk full, out of memory, too many
# connections), the server shutting down, starting up or crashed. By code: serialization
# failure, deadlock, a lock not granted within lock_timeout, a statement cancelled (the
# server's statement_timeout). docs/operations.md has the whole table.
TRANSIENT_CLASSES = ("08", "53", "57P")
# No connection, or no answer, in time: connect, pool checkout, statement; or a pooled one dead.
UNREACHABLE = (ConnectError, PoolTimeoutError, StatementTimeoutError, DisconnectionError)
TRANSIENT_CODES = frozenset({"40001", "40P01", "55P03", "57014"})


def is_transient(error: SQLAlchemyError) -> bool:
    """Whether `error` says the database cannot serve now, where a retry may succeed (a 503
    with Retry-After), rather than that the request or the code is wrong (a 4xx or 500).

    Beside the SQLSTATEs above: no connection in time (connect, pool, statement timeouts), a
    connection that died (SQLAlchemy invalidated it: a restart, a failover, a demoted primary's
    read-only refusal, see `discard_read_only`), no host of the URL's list writable, and a
    prepared statement gone stale under a schema change (the driver re-prepares it next time).
    """
    code = sqlstate(error)
    return (
        isinstance(error, UNREACHABLE)
        or (isinstance(error, DBAPIError) and error.connection_invalidated)
        or code.startswith(TRANSIENT_CLASSES)
        or code in TRANSIENT_CODES
        or stale_statement(error)
    )


def stale_statement(error: SQLAlchemyError) -> bool:
    """A prepared statement or type the driver cached went stale under a schema change
    ("cached plan must not change result type", "cache lookup failed for type")."""
    # SQLAlchemy wraps its adaptation of the driver's error, raised from the driver's own.
    driver_error = getattr(getattr(error, "orig", None), "__cause__", None)
    return isinstance(driver_error, asyncpg.InvalidCachedStatementError) or (
        isinstance(driver_error, asyncpg.InternalServerError)
        and "cache lookup failed" in str(driver_error)
    )


def is_unreachable(error: BaseException) -> bool:
    """Whether a failed connect found no server to use: refused, unresolvable, TLS, timed out
    (all OSError), or none of the URL's hosts with the target_session_attrs asked for."""
    driver_error = error.__cause__ if error.__cause__ is not None else error
    return isinstance(error, OSError) or isinstance(
        driver_error, asyncpg.TargetServerAttributeNotMatched
    )


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


# Transactions and savepoints in which a statement failed, and how many statements failed in
# this process: get_session() looks for an aborted transaction (a trip through SQLAlchemy's
# greenlet bridge) only when the count moved during its block. The mark is on the transaction
# object, so it ends with it, and no listener on every BEGIN, COMMIT and ROLLBACK is needed
# to clear it.
aborted_transactions: WeakSet[Transaction] = WeakSet()
failed_statements = 0


def mark_aborted(context: ExceptionContext) -> None:
    """A statement failed inside a transaction: PostgreSQL now ignores all but its end."""
    global failed_statements
    transaction = innermost_transaction(context.connection) if context.connection else None
    if transaction is not None:
        aborted_transactions.add(transaction)
        failed_statements += 1


def innermost_transaction(connection: Connection) -> Transaction | None:
    return connection.get_nested_transaction() or connection.get_transaction()


def in_aborted_transaction(session: Session) -> bool:
    """Whether a statement failed in the session's current transaction or savepoint (a
    savepoint rolled back since is over, and the transaction around it usable again)."""
    return session.in_transaction() and (
        innermost_transaction(session.connection()) in aborted_transactions
    )


def check_pooled_connections(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """Hand out no connection known to be dead, at no cost to a busy pool.

    A connection whose socket the driver saw close (a restarted server, a killed backend) is
    discarded at checkout for free. One that sat idle longer than `database_pool_ping_idle`,
    long enough for a NAT or proxy to drop it silently, is first pinged: one round trip,
    bounded by `database_pool_ping_timeout`. The pool replaces a rejected connection with a
    new one, so the caller never sees the failure. This replaces `pool_pre_ping`, which cost
    three round trips (BEGIN, a query, ROLLBACK) on every checkout.
    """

    def checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[CHECKED_IN_AT] = time.monotonic()
        if dbapi_connection is not None:  # None: discarded
            dbapi_connection.readonly = False  # read-write again after a read session
            dbapi_connection.autocommit = False  # in transactions again after execute()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _: Any) -> None:
        driver = record.driver_connection
        if driver is None or driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")
        idle = time.monotonic() - record.info.get(CHECKED_IN_AT, math.inf)
        if idle > settings.database_pool_ping_idle:
            try:
                await_only(driver.execute(PING, timeout=settings.database_pool_ping_timeout))
            except Exception as error:  # whatever failed, a new connection is the cure
                # Closed at once: a polite close would wait on a connection that does not
                # answer.
                driver.terminate()
                reason = f"a pooled connection idle {idle:.0f} s failed its ping: {error!r}"
                raise DisconnectionError(reason) from error

    event.listen(engine.sync_engine, "checkin", checked_in)
    event.listen(engine.sync_engine, "checkout", checked_out)
    return engine


def discard_timed_out(context: ExceptionContext) -> StatementTimeoutError | None:
    """A statement timed out: the server may be gone, so the connection is not reused."""
    error = context.original_exception
    if isinstance(error, TimeoutError) and not isinstance(error, SQLAlchemyError):
        context.is_disconnect = True
        connection = context.connection
        driver = None if connection is None or connection.closed else connection.connection
        if driver is not None and driver.driver_connection is not None:
            # Closed at once, as after a failed ping: see check_pooled_connections.
            driver.driver_connection.terminate()
        return StatementTimeoutError(f"no answer from the server in time: {error!r}")
    return None


# True inside get_read_session(): there a 25006 is the caller's write, not a demoted server.
in_read_session: ContextVar[bool] = ContextVar("in_read_session", default=False)


def discard_read_only(context: ExceptionContext) -> None:
    """A write was refused as read-only outside get_read_session(): the server was demoted or
    fenced (a failover), so the connection is discarded, and the pool connects anew, where a
    host list with target_session_attrs=read-write finds the new primary."""
    refused = getattr(context.original_exception, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION
    if refused and not in_read_session.get():
        context.is_disconnect = True


def watch(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """Register all of the above on `engine`."""
    event.listen(engine.sync_engine, "handle_error", discard_timed_out)
    event.listen(engine.sync_engine, "handle_error", discard_read_only)
    event.listen(engine.sync_engine, "handle_error", mark_aborted)
    logs.log_slow_statements(engine, settings.database_slow_statement_ms)
    return check_pooled_connections(engine, settings)

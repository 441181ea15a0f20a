"""One engine, built from the settings on first use; `get_session()` for units of work,
`get_read_session()` for reads (on a replica when DATABASE_READ_URL names one), `execute()`
and `execute_read()` for a unit of work of one statement; `dispose()` at shutdown."""

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVarTuple, overload
from uuid import uuid4

from sqlalchemy import Connection, CursorResult, Engine, Executable, Result, Select, event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.selectable import TypedReturnsRows
from sqlalchemy.util import greenlet_spawn

from ..settings import Settings, get_settings
from . import connections, urls
from .budget import pool_limits
from .fair_pool import FairQueuePool

logger = logging.getLogger(__name__)

ABORTED_MESSAGE = (
    "A statement in this get_session() block failed and was caught, which aborted the "
    "transaction: nothing was committed. Run statements that may fail inside "
    "`async with session.begin_nested():`, or let the error propagate."
)


# What pg_stat_activity shows for our connections, unless the URL names another
# (`?application_name=`): the project's package name.
APPLICATION_NAME = __name__.partition(".")[0]


class WriteInReadSessionError(SQLAlchemyError):
    """A statement in a `get_read_session()` block tried to write (SQLSTATE 25006): writes
    need `get_session()`."""


class TransactionAbortedError(SQLAlchemyError):
    """The block left cleanly, but a statement in it had failed: PostgreSQL had aborted the
    transaction, so the COMMIT rolled everything back and nothing was committed."""


def create_engine(settings: Settings, **options: Any) -> AsyncEngine:
    """An asyncpg engine configured by `settings` (`options` win); connects on first use."""
    connect_args: dict[str, Any] = {
        "timeout": settings.database_connect_timeout,  # the URL's connect_timeout wins
        # The URL as asyncpg's DSN, which asyncpg parses as libpq does (urls.connect_args).
        **urls.connect_args(settings.database_url.get_secret_value()),
        "connection_class": connections.CommitCheckingConnection,
        "command_timeout": settings.database_command_timeout or None,
    }
    if "application_name" not in settings.database_url_object.query:
        # A name in pg_stat_activity; asyncpg's server_settings would override the DSN's own.
        connect_args["server_settings"] = {"application_name": APPLICATION_NAME}
    if settings.database_pgbouncer:
        # PgBouncer in transaction mode may run each transaction on another server connection,
        # where a prepared statement from elsewhere can exist under the same name: cache none
        # and name each one uniquely (sqlalchemy#6467, #10226). The pool of client connections
        # to PgBouncer stays: a new connection per session would cost a login each.
        connect_args |= {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid4()}__",
        }
    connect_args |= options.pop("connect_args", {})

    def connect() -> Any:
        # SQLAlchemy's own asyncpg connect, given the DSN instead of the URL taken apart (which
        # would lose host lists and libpq's parameters); `async_creator` would bypass the
        # prepared_statement_* arguments it handles.
        try:
            return built.sync_engine.dialect.loaded_dbapi.connect(**connect_args)
        except Exception as error:
            # Refused, unresolvable, TLS, the connect timeout, or no host of a list that
            # target_session_attrs accepts (a failover in progress): unreachable for now. A
            # database error like any other, never a bare OSError that callers could not tell
            # from their own; the driver's message names the host, never the password.
            if not connections.is_unreachable(error):
                raise
            raise connections.ConnectError(f"cannot connect to the database: {error!r}") from error

    pool_size, max_overflow = pool_limits(settings)
    pooling: dict[str, Any] = {
        # Tasks waiting for a connection are served in arrival order (fair_pool.py).
        "poolclass": FairQueuePool,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
    }
    if options.get("poolclass") is NullPool:
        pooling = {}  # nothing to size or recycle
    built = create_async_engine(
        settings.database_url_object,
        echo=settings.database_echo,
        creator=connect,
        **{**pooling, **options},
    )
    return connections.watch(built, settings)


def create_read_engine(settings: Settings) -> AsyncEngine | None:
    """The replica's engine, or None when DATABASE_READ_URL is unset. Its pool waits and its
    connects give up after `database_read_fallback_timeout`, so a replica that is down sends
    reads to the primary quickly (the read URL's own connect_timeout gives way to it)."""
    if settings.database_read_url is None:
        return None
    timeout = settings.database_read_fallback_timeout
    replica = settings.model_copy(update={"database_url": settings.database_read_url})
    return create_engine(replica, pool_timeout=timeout, connect_args={"timeout": timeout})


class ReadOnlySession(Session):
    """get_read_session()'s sessions: each transaction begins as BEGIN READ ONLY (asyncpg
    sends a BEGIN anyway: no round trip is added), and PostgreSQL refuses writes (25006)."""


@event.listens_for(ReadOnlySession, "after_begin")
def begin_read_only(session: Session, transaction: Any, connection: Connection) -> None:
    # Set on the driver's connection before its lazy BEGIN, not with SQLAlchemy's
    # `postgresql_readonly` option, whose engine proxy costs every statement's events. The
    # pool's checkin makes the connection read-write again (connections.check_pooled_connections).
    driver_connection: Any = connection.connection.dbapi_connection
    driver_connection.readonly = True


def read_sessions(bind: AsyncEngine | None = None) -> async_sessionmaker[AsyncSession]:
    """Sessions in read-only transactions (on `bind`'s pool), for get_read_session()."""
    return async_sessionmaker(bind, expire_on_commit=False, sync_session_class=ReadOnlySession)


# The session factories, bound to the engines when they are built (`get_engine()`), unless
# bound before (tests bind them to their own transaction). expire_on_commit=False: objects
# stay loaded after commit, so reading an attribute later does no implicit IO (which would
# fail outside the greenlet bridge with MissingGreenlet).
session_factory = async_sessionmaker(expire_on_commit=False)
# Read-only sessions: on the replica when there is one, else the same pool as writes ...
read_session_factory = read_sessions()
# ... and on the primary, where reads go while the replica is down.
primary_read_session_factory = read_sessions()
engine: AsyncEngine | None = None
read_engine: AsyncEngine | None = None
# Whether the replica failed to serve the last read: one warning per outage, not per read.
replica_down = False


def get_engine() -> AsyncEngine:
    """The app's engine (and the replica's, when DATABASE_READ_URL is set), built from the
    settings the first time it is asked for; importing this module connects nowhere."""
    global engine, read_engine
    if engine is None:
        settings = get_settings()
        engine = create_engine(settings)
        read_engine = create_read_engine(settings)
        for factory, bind in (
            (session_factory, engine),
            (primary_read_session_factory, engine),
            (read_session_factory, read_engine or engine),
        ):
            if factory.kw.get("bind") is None:
                factory.configure(bind=bind)
    return engine


@event.listens_for(Session, "do_orm_execute")
def retry_a_stale_first_statement(state: ORMExecuteState) -> Result[Any] | None:
    """Run a session's statement once more when the driver's cached prepared statement went
    stale under a schema change (a migration under a running service) and nothing of the
    unit of work had run: it is the transaction's first statement, with no change waiting to
    be flushed. Otherwise the error stands (the web service answers it 503, retry)."""
    session = state.session
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        return None  # not the first: run as usual
    try:
        return state.invoke_statement()
    except DBAPIError as error:
        if not connections.stale_statement(error):
            raise
        logger.info("a cached statement went stale (a schema change): ran it again")
        session.rollback()  # the transaction held only the failed statement
        return state.invoke_statement()


def commit_then_close(session: Session) -> None:
    session.commit()
    session.close()  # no IO after a commit: it only lets go of the objects


async def close_shielded(session: AsyncSession) -> None:
    """Close `session` as leaving `async with session` does: shielded from cancellation."""
    async with session:
        pass


@asynccontextmanager
async def get_session() -> AsyncIterator[AsyncSession]:
    """Yield a session that commits when the block exits cleanly and rolls back when it raises.

    An explicit `await session.commit()` inside the block works too. To let a statement fail
    and carry on, run it in a savepoint: `async with session.begin_nested(): ...` rolls back
    just that part when it raises. A failed statement caught *outside* a savepoint has aborted
    the whole transaction: leaving the block then raises `TransactionAbortedError`, and
    nothing of the block is committed.

    When the block raises (cancellation included), the session is closed without committing:
    the close is shielded from cancellation and returns the connection to the pool, which
    rolls it back, or discards it if a cancelled statement left it unusable. A rollback
    awaited here instead would fail on such a connection and mask the original error. The
    COMMIT itself is not shielded, so a cancelled task (a timeout, a client gone) never waits
    on a slow or unreachable server; but a cancellation that arrives while COMMIT is in flight
    has an unknown outcome: the server may have committed. Where that matters, make the write
    idempotent or check for it afterwards.
    """
    if engine is None:
        get_engine()
    failed_before = connections.failed_statements
    session = session_factory()
    token = in_session.set(True)
    try:
        yield session
        # Known aborted: send no COMMIT; the close below rolls back, as on any error.
        if connections.failed_statements != failed_before and await session.run_sync(
            connections.in_aborted_transaction
        ):
            raise TransactionAbortedError(ABORTED_MESSAGE)
        try:
            # Commit and close in one trip through SQLAlchemy's greenlet bridge.
            await session.run_sync(commit_then_close)
        except DBAPIError as error:  # aborted beside SQLAlchemy (raw driver work): COMMIT says
            if connections.sqlstate(error) != connections.IN_FAILED_SQL_TRANSACTION:
                raise
            raise TransactionAbortedError(ABORTED_MESSAGE) from error
    except BaseException:
        await close_shielded(session)
        raise
    finally:
        in_session.reset(token)


class StatementInSessionError(SQLAlchemyError):
    """`execute()` was called inside a `get_session()` block: its statement would commit on
    its own, whatever the block does. Inside the block, use `session.execute()`."""


# True inside a get_session() block, where execute() is refused (StatementInSessionError).
in_session: ContextVar[bool] = ContextVar("in_session", default=False)
Ts = TypeVarTuple("Ts")
Parameters = Mapping[str, Any]


@overload
async def execute(
    statement: TypedReturnsRows[*Ts], parameters: Parameters | None = None
) -> CursorResult[*Ts]: ...
@overload
async def execute(
    statement: Executable, parameters: Parameters | None = None
) -> CursorResult[*tuple[Any, ...]]: ...
async def execute(
    statement: Executable, parameters: Parameters | None = None
) -> CursorResult[*tuple[Any, ...]]:
    """Run one statement as a unit of work of its own, on the primary, committed when it
    returns: one insert, update or delete, or a read of what must be current. One round trip
    (no BEGIN, no COMMIT); the result's rows are in memory. Anything more takes `get_session()`.

    It takes one statement with one set of parameters (a list of them is refused), and it is
    refused inside a `get_session()` block, whose statements commit together. Its errors are
    those of a session's `execute()`. Cancelled while the statement runs, the connection is
    closed, not reused; the statement may have committed or not.
    """
    if in_session.get():
        raise StatementInSessionError(
            "execute() inside a get_session() block would commit on its own: use session.execute()"
        )
    check_parameters(parameters)
    bind = session_factory.kw.get("bind") or get_engine()
    if isinstance(bind, AsyncConnection):  # the tests' transaction (tests/conftest.py)
        return await execute_in_savepoint(bind, statement, parameters)
    return await greenlet_spawn(execute_alone, bind.sync_engine, None, statement, parameters)


async def execute_read(
    statement: Select[*Ts], parameters: Parameters | None = None
) -> CursorResult[*Ts]:
    """Run one `select()` on its own, as `get_read_session()` would: on the replica of
    DATABASE_READ_URL, on the primary when it is unset or the replica cannot give a connection
    in time. One round trip; a replica lags (see get_read_session()).

    Anything but a `select()` is refused (`WriteInReadSessionError`), and a replica refuses
    writes itself; on the primary there is no transaction to make read-only, so a function
    that writes, called by the select, is not refused there.
    """
    if not isinstance(statement, Select):
        raise WriteInReadSessionError("execute_read() runs a select() only; use execute()")
    check_parameters(parameters)
    bind = read_session_factory.kw.get("bind")
    if bind is None:
        get_engine()
        bind = read_session_factory.kw["bind"]
    token = connections.in_read_session.set(True)
    try:
        if isinstance(bind, AsyncConnection):  # the tests' transaction (tests/conftest.py)
            return await execute_in_savepoint(bind, statement, parameters)
        primary = None
        if read_engine is not None:  # else `bind` is the primary's engine
            primary = primary_read_session_factory.kw["bind"].sync_engine
        return await greenlet_spawn(execute_alone, bind.sync_engine, primary, statement, parameters)
    finally:
        connections.in_read_session.reset(token)


def check_parameters(parameters: object) -> None:
    if parameters is not None and not isinstance(parameters, Mapping):
        # A list would run the statement once per item: several statements.
        raise TypeError("one statement takes one mapping of parameters (or none)")


async def execute_in_savepoint(
    connection: AsyncConnection, statement: Executable, parameters: Parameters | None
) -> CursorResult[*tuple[Any, ...]]:
    """The statement in the tests' transaction, in a savepoint: what it writes is rolled back
    with the test, and its failure leaves the test's transaction usable."""
    async with connection.begin_nested():
        return await connection.execute(statement, parameters)


def execute_alone(
    engine: Engine,
    fallback: Engine | None,
    statement: Executable,
    parameters: Parameters | None,
) -> CursorResult[*tuple[Any, ...]]:
    """Take a connection from `engine` (from `fallback` if that fails) and run the statement
    on it in autocommit mode: all in one trip through SQLAlchemy's greenlet bridge."""
    if fallback is None:
        connection = engine.connect()
    else:
        try:
            connection = engine.connect()
        except SQLAlchemyError as error:  # down, unreachable, starting up, pool exhausted
            replica_failed(error)
            connection = fallback.connect()
        else:
            replica_served()
    with connection:
        # No BEGIN before the statement, no COMMIT after: PostgreSQL runs it as a transaction
        # of its own. The pool's checkin turns autocommit off again (connections.py). A
        # statement cancelled in flight makes SQLAlchemy close its connection, never pool it.
        connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        try:
            return connection.execute(statement, parameters)
        except DBAPIError as error:
            # A cached statement gone stale under a schema change did nothing (autocommit):
            # run it once more, as get_session()'s first statement is.
            if not connections.stale_statement(error):
                raise
            logger.info("a cached statement went stale (a schema change): ran it again")
            return connection.execute(statement, parameters)


def replica_failed(error: BaseException) -> None:
    """Reads go to the primary: one warning per outage, not per read."""
    global replica_down
    if not replica_down:
        logger.warning("reads run on the primary: the replica failed: %r", error)
    replica_down = True


def replica_served() -> None:
    global replica_down
    if replica_down:
        logger.info("reads run on the replica again")
        replica_down = False


async def replica_session() -> AsyncSession:
    """A read-only session holding a replica connection, else one on the primary (fallback)."""
    if engine is None:
        get_engine()
    session = read_session_factory()
    if read_engine is None:
        return session  # no replica configured: the connection is taken on first use
    try:
        await session.connection()  # within database_read_fallback_timeout, or it fails
    except SQLAlchemyError as error:  # down, unreachable, starting up, pool exhausted
        await close_shielded(session)
        replica_failed(error)
        return primary_read_session_factory()
    except BaseException:  # cancelled while connecting: the connection goes back, then on
        await close_shielded(session)
        raise
    replica_served()
    return session


@asynccontextmanager
async def get_read_session() -> AsyncIterator[AsyncSession]:
    """Yield a session in a read-only transaction: on the replica of DATABASE_READ_URL, on the
    primary when it is unset or the replica cannot give a connection in time. The transaction
    ends when the block exits. A write in it, or an object added to it, raises
    `WriteInReadSessionError`. A replica lags: a read right after a write may not see it;
    read what you just wrote with `get_session()` (docs/operations.md, "Replicas and failover").
    """
    session = await replica_session()
    token = connections.in_read_session.set(True)
    try:
        yield session
        # Commits nothing, as a rollback would, at the same cost; but an object added and
        # never flushed is refused here (SQLSTATE 25006) instead of silently dropped.
        await session.run_sync(commit_then_close)
    except BaseException as error:
        await close_shielded(session)
        if connections.sqlstate(error) != connections.READ_ONLY_SQL_TRANSACTION:
            raise
        raise WriteInReadSessionError(
            "a statement in a get_read_session() block tried to write; use get_session()"
        ) from error
    finally:
        connections.in_read_session.reset(token)


async def dispose() -> None:
    """Close every pooled connection; call at shutdown (end of a script, app lifespan exit).
    The engines stay: a later session opens new connections."""
    for built in (engine, read_engine):
        if built is not None:
            await built.dispose()

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.core.migrations import (
    MIGRATION_LOCK_ID,
    grant_to_app_role,
    migration_settings,
)
from {{ cookiecutter.project_slug }}.core.safe_migrations import safe_indexes
from {{ cookiecutter.project_slug }}.models import Base
from {{ cookiecutter.project_slug }}.settings import Settings, get_settings

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging, unless the caller (a program or test that
# runs migrations in-process) asked to keep its own logging setup.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

# the models' MetaData, for 'autogenerate' support
target_metadata = Base.metadata


def keep_timeouts_past_autocommit_blocks(set_timeouts: Callable[[], None]) -> None:
    """autocommit_block() commits the migration's transaction, and its LOCAL timeouts with it:
    the transaction it begins after the block (the rest of the revision, and the revisions
    after it) gets them again. Every block, autogenerate's or written by hand."""
    migration_context = context.get_context()
    autocommit_block = migration_context.autocommit_block

    @contextmanager
    def autocommit_block_then_timeouts() -> Iterator[None]:
        with autocommit_block():
            yield
        set_timeouts()

    setattr(migration_context, "autocommit_block", autocommit_block_then_timeouts)  # noqa: B010


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode.

    This configures the context with just a dialect name: emitting SQL to the script output
    needs no URL, no credentials and no reachable database.

    """
    context.configure(
        dialect_name="postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )

    def set_timeouts() -> None:
        """The timeouts an online run sets (their defaults: offline needs no settings)."""
        for name in ("lock_timeout", "statement_timeout"):
            seconds = Settings.model_fields[f"database_migration_{name}"].default
            context.execute(f"SET LOCAL {name} = '{int(seconds * 1000)}ms'")

    keep_timeouts_past_autocommit_blocks(set_timeouts)
    with context.begin_transaction():
        set_timeouts()
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # `alembic check` and autogenerate also report changed server defaults.
        compare_server_default=True,
        # Autogenerate builds an index on an existing table concurrently (no write lock).
        process_revision_directives=safe_indexes,
    )

    # Concurrent upgrades (app instances starting together) queue here instead of racing to
    # create the same tables (alembic#633). The lock is held by a transaction on a second
    # connection for the whole run: a revision's autocommit_block() commits the migration's
    # own transaction, which would release a lock taken in it; and a session-level lock is
    # unsafe behind PgBouncer's transaction pooling. Released when `lock` closes.
    def set_timeouts() -> None:
        """A statement waiting for a table lock (ALTER TABLE behind a long transaction) queues
        every later query of the application behind it: give up after
        DATABASE_MIGRATION_LOCK_TIMEOUT seconds instead; and one that holds its locks longer
        than DATABASE_MIGRATION_STATEMENT_TIMEOUT stalls the service that long: roll back
        instead. LOCAL: gone with the transaction, so never left on a connection PgBouncer
        hands to someone else (and not applied in an autocommit block, where CREATE INDEX
        CONCURRENTLY blocks nobody however long it takes). A program's migrate() passes its
        own settings' timeouts in the attributes."""
        for name in ("lock_timeout", "statement_timeout"):
            seconds = config.attributes.get(name)
            if seconds is None:
                seconds = getattr(get_settings(), f"database_migration_{name}")
            connection.execute(
                text("SELECT set_config(:name, :value, true)"),
                {"name": name, "value": f"{int(seconds * 1000)}ms"},
            )

    keep_timeouts_past_autocommit_blocks(set_timeouts)
    with connection.engine.connect() as lock:
        take_migration_lock(lock)
        with context.begin_transaction():
            set_timeouts()
            context.run_migrations()
            # The app's role reads and writes rows, nothing more (see run_async_migrations).
            grant_to_app_role(connection, config.attributes.get("app_role"))


def take_migration_lock(lock: Connection) -> None:
    """Wait for the migration lock and keep it in `lock`'s transaction.

    Tries, rather than blocks in pg_advisory_xact_lock(): a backend blocked there holds a
    snapshot, and the running migration's CREATE INDEX CONCURRENTLY waits for every older
    snapshot to go: a deadlock across two connections that PostgreSQL cannot detect.
    """
    try_lock = text("SELECT pg_try_advisory_xact_lock(:id)")
    while not lock.scalar(try_lock, {"id": MIGRATION_LOCK_ID}):
        lock.rollback()
        lock.execute(text("SELECT pg_sleep(0.2)"))  # waits on the server: no loop blocked
        lock.rollback()
    # A statement that needs no snapshot, so the finished SELECT's portal (and the snapshot it
    # keeps) goes, or our own CREATE INDEX CONCURRENTLY would wait for this transaction; and
    # a server's idle-in-transaction timeout must not end it while the migration runs.
    lock.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))


async def run_async_migrations(connectable: AsyncEngine | AsyncConnection | None) -> None:
    """In this scenario we need to create an Engine
    and associate a connection with the context.

    The URL comes from the project's settings, never from alembic.ini. A caller may pass its
    own AsyncEngine or AsyncConnection in ``config.attributes["connection"]`` instead.

    """
    if isinstance(connectable, AsyncConnection):
        await connectable.run_sync(do_run_migrations)
        return

    # The app's engine options, but no pool for a one-off run, and DATABASE_MIGRATION_URL
    # (a direct connection) when it is set, else DATABASE_URL (PgBouncer mode included); its
    # migrations grant DATABASE_URL's role (when another) its rows. A caller's engine gets
    # what the caller asks for in the attributes.
    if connectable is None:
        config.attributes.setdefault("app_role", get_settings().database_url_object.username)
    engine = connectable or create_engine(
        migration_settings(get_settings()), poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)

    # Also a caller's engine: its pooled connections belong to this event loop, which ends
    # here; the next command (a new asyncio.run) would find them attached to a closed loop.
    await engine.dispose()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode.

    Code already inside an event loop passes a sync Connection through
    ``config.attributes["connection"]`` (see the cookbook, "Programmatic API use
    (connection sharing) With Asyncio"); it is used directly.

    """
    connectable = config.attributes.get("connection", None)
    if isinstance(connectable, Connection):
        do_run_migrations(connectable)
    else:
        asyncio.run(run_async_migrations(connectable))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

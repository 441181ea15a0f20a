import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from {{ cookiecutter.project_slug }}.migrations import MIGRATION_LOCK_ID
from {{ cookiecutter.project_slug }}.models import Base
from {{ cookiecutter.project_slug }}.settings import get_settings

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging, unless the caller (a program or test that
# runs migrations in-process) asked to keep its own logging setup.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

# the models' MetaData, for 'autogenerate' support
target_metadata = Base.metadata


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

    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)

    with context.begin_transaction():
        # Concurrent upgrades (app instances starting together) queue here instead of racing
        # to create the same tables (alembic#633); released when this transaction ends.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def run_async_migrations(connectable: AsyncEngine | AsyncConnection | None) -> None:
    """In this scenario we need to create an Engine
    and associate a connection with the context.

    The URL comes from the project's settings, never from alembic.ini. A caller may pass its
    own AsyncEngine or AsyncConnection in ``config.attributes["connection"]`` instead.

    """
    if isinstance(connectable, AsyncConnection):
        await connectable.run_sync(do_run_migrations)
        return

    # Imported here, not at the top: offline mode needs no settings and no DATABASE_URL.
    from {{ cookiecutter.project_slug }}.database import create_engine

    # The app's engine options (PgBouncer mode included), but no pool for a one-off run.
    engine = connectable or create_engine(get_settings(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)

    if connectable is None:
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

"""Run Alembic migrations from async code: app startup, tests, scripts."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# alembic.ini and alembic/ live at the project root, beside src/ (a source checkout).
ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
# env.py holds this PostgreSQL advisory lock (transaction-scoped) while it migrates.
MIGRATION_LOCK_ID = 5_186_823_411_023_374_112


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config; with `connection`, env.py migrates on it instead of connecting."""
    if not ALEMBIC_INI.is_file():
        raise FileNotFoundError(f"{ALEMBIC_INI} not found: migrations run from a source checkout")
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = connection
    config.attributes["configure_logger"] = False  # keep the running program's logging
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind `engine` to `revision`, inside the running event loop."""
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade the database behind `engine` to `revision`, inside the running event loop."""
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))

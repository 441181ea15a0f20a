"""Run Alembic migrations from async code: app startup, tests, scripts.

`python -m <package>.migrations FILE` is alembic's post-write hook (alembic.ini): it formats
a new revision with ruff when ruff is installed, and otherwise only says so.
"""

import importlib.util
import subprocess
import sys

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .settings import PROJECT_ROOT

# alembic.ini and alembic/ live at the project root, beside src/ (a source checkout).
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
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


# connect(), not begin(): alembic manages the transactions itself, and a revision's
# autocommit_block() (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE) cannot run inside a
# transaction of the caller's.
async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind `engine` to `revision`, inside the running event loop."""
    async with engine.connect() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade the database behind `engine` to `revision`, inside the running event loop."""
    async with engine.connect() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


def format_revision(path: str) -> str:
    """Fix and format a new revision file with ruff, if installed; say what was done."""
    if importlib.util.find_spec("ruff") is None:
        return f"{path} was not formatted: ruff is not installed (it comes with the dev group)"
    for arguments in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
        # A finding ruff cannot fix is for the author to see, not a reason to fail the command.
        subprocess.run([sys.executable, "-m", "ruff", *arguments, path], check=False)
    return f"{path} formatted with ruff"


if __name__ == "__main__":
    print(format_revision(sys.argv[1]))

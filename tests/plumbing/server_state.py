"""What the server itself says, for assertions: tutorials stored, transactions left open."""

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from {{ cookiecutter.project_slug }}.models import Tutorial


async def count_tutorials(bind: AsyncSession | AsyncConnection | AsyncEngine, prefix: str) -> int:
    """Tutorials whose name starts with `prefix`, as `bind` (or a fresh connection) sees them."""
    statement = select(func.count()).where(Tutorial.name.startswith(prefix))
    if isinstance(bind, AsyncSession | AsyncConnection):
        return (await bind.execute(statement)).scalar_one()
    async with bind.connect() as connection:
        return (await connection.execute(statement)).scalar_one()


async def idle_in_transaction(engine: AsyncEngine) -> int:
    """Backends of this database sitting in an open transaction (a leaked session)."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            )
        )
    return int(count or 0)

"""What the server itself says, for assertions: the tutorials stored."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from {{ cookiecutter.project_slug }}.models import Tutorial


async def count_tutorials(bind: AsyncSession | AsyncConnection | AsyncEngine, prefix: str) -> int:
    """Tutorials whose name starts with `prefix`, as `bind` (or a fresh connection) sees them."""
    statement = select(func.count()).where(Tutorial.name.startswith(prefix))
    if isinstance(bind, AsyncSession | AsyncConnection):
        return (await bind.execute(statement)).scalar_one()
    async with bind.connect() as connection:
        return (await connection.execute(statement)).scalar_one()

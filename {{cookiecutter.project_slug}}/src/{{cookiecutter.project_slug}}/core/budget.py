"""The connection budget: how large each process's pool is, and do the pools of all the
processes fit the server's `max_connections`?"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:  # settings.py imports this module
    from ..settings import Settings

# The fewest connections a budget may leave a process: migrating takes two at once (env.py
# holds its lock on a second connection), and with one the startup migration would wait
# for itself until the pool timeout.
MIN_POOL = 2

# Connection slots no ordinary role may take: superuser_reserved_connections, and from
# PostgreSQL 16 on reserved_connections (for pg_use_reserved_connections); missing_ok
# (the `true`) gives NULL on older servers.
SERVER_LIMITS = text(
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true), '0')::int"
)


def pool_limits(settings: "Settings") -> tuple[int, int]:
    """This process's (pool size, max overflow): DATABASE_CONNECTION_BUDGET shared by
    WEB_CONCURRENCY processes when a budget is set, else DATABASE_POOL_SIZE and
    DATABASE_MAX_OVERFLOW."""
    if settings.database_connection_budget is None:
        return settings.database_pool_size, settings.database_max_overflow
    return settings.database_connection_budget // settings.web_concurrency, 0


def check_pool_settings(settings: "Settings") -> None:
    """A budget decides the pool: refused beside an explicit pool size, or too small."""
    if settings.database_connection_budget is None:
        return
    explicit = {"database_pool_size", "database_max_overflow"} & settings.model_fields_set
    if explicit:
        raise ValueError(
            "DATABASE_CONNECTION_BUDGET sizes the pool itself: unset "
            + " and ".join(sorted(name.upper() for name in explicit))
        )
    if settings.database_connection_budget < MIN_POOL * settings.web_concurrency:
        raise ValueError(
            f"DATABASE_CONNECTION_BUDGET={settings.database_connection_budget} leaves less "
            f"than {MIN_POOL} connections to each of WEB_CONCURRENCY="
            f"{settings.web_concurrency} processes (a migration on startup takes two)"
        )


@dataclass(frozen=True)
class Budget:
    """What `processes` pools may open against what the server lets ordinary roles open."""

    processes: int
    per_process: int  # pool size + max overflow
    max_connections: int
    reserved: int

    @property
    def needed(self) -> int:
        return self.processes * self.per_process

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    @property
    def holds(self) -> bool:
        return self.needed <= self.available

    def warning(self) -> str:
        """One line: the numbers, and the ways out."""
        return (
            f"connection budget exceeded: {self.processes} process(es) x {self.per_process} "
            f"connections (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW) = {self.needed}, but the "
            f"server allows {self.available} (max_connections {self.max_connections} - "
            f"{self.reserved} reserved), shared with every other client: under load, "
            f"connections will be refused. Set DATABASE_CONNECTION_BUDGET to this deployment's "
            f"share of {self.available} (each process then takes its part), or lower "
            f"DATABASE_POOL_SIZE / DATABASE_MAX_OVERFLOW to fit "
            f"{self.available // self.processes} per process, run fewer processes, raise "
            f"max_connections, or put PgBouncer in front (DATABASE_PGBOUNCER=true)"
        )


async def connection_budget(engine: AsyncEngine, settings: "Settings", processes: int) -> Budget:
    """The budget of `processes` processes with `settings`' pools on `engine`'s server."""
    async with engine.connect() as connection:
        limits = (await connection.execute(SERVER_LIMITS)).one()
    max_connections, superuser_reserved, reserved = limits
    return Budget(
        processes=processes,
        per_process=sum(pool_limits(settings)),
        max_connections=max_connections,
        reserved=superuser_reserved + reserved,
    )

"""Settings from the environment, else from `.env`: one object, one database URL."""

from functools import lru_cache

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

DRIVER = "postgresql+asyncpg"
# Spellings hosting providers hand out; all mean PostgreSQL and get the asyncpg driver.
ACCEPTED_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})
# libpq's `sslmode` values; asyncpg takes the same words through its `ssl` argument.
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def to_async_url(raw: str) -> URL:
    """Parse a PostgreSQL URL into an asyncpg one; errors name the problem, never the password."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError(
            "DATABASE_URL is not a URL like postgresql+asyncpg://user:password@host:5432/name"
        ) from None
    if url.drivername not in ACCEPTED_SCHEMES:
        raise ValueError(
            f"DATABASE_URL has the scheme {url.drivername!r}; this project needs PostgreSQL: "
            "postgresql+asyncpg://, postgresql:// or postgres://"
        )
    query = dict(url.query)
    sslmode = query.pop("sslmode", None)
    if sslmode is not None:
        if sslmode not in SSL_MODES:
            raise ValueError(
                f"DATABASE_URL has sslmode={sslmode!r}; use one of {', '.join(sorted(SSL_MODES))}"
            )
        query["ssl"] = sslmode
    return url.set(drivername=DRIVER, query=query)


class Settings(BaseSettings):
    """Every knob of the data layer; override any of them with an environment variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # A rejected DATABASE_URL would otherwise be echoed, password and all, in the error.
        hide_input_in_errors=True,
    )

    # A secret: pydantic shows it as '**********' in repr, str and validation errors.
    database_url: SecretStr
    database_echo: bool = False
    # Kept open: covers typical concurrency, so steady load opens no connections (README).
    database_pool_size: int = 20
    # Opened for bursts beyond the pool, closed again when returned to a full pool.
    database_max_overflow: int = 10
    database_pool_timeout: float = 30.0
    # Recycle before common server/proxy idle timeouts close a connection under us.
    database_pool_recycle: int = 1800
    # A connection idle in the pool this many seconds is pinged before use (a NAT or proxy
    # may have dropped it silently); busier ones go out unchecked but for the closed check.
    database_pool_ping_idle: float = 30.0
    # Seconds a ping may take before its connection is replaced.
    database_pool_ping_timeout: float = 5.0
    # Seconds a statement may wait for the server before it fails (0: forever), so a peer
    # that vanished silently costs one bounded failure, never a hang.
    database_command_timeout: float = 60.0
    # PgBouncer in transaction mode: no prepared-statement cache (sqlalchemy#6467).
    database_pgbouncer: bool = False

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        to_async_url(value.get_secret_value())
        return value

    @property
    def database_url_object(self) -> URL:
        """The asyncpg URL; its repr and str mask the password."""
        return to_async_url(self.database_url.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment

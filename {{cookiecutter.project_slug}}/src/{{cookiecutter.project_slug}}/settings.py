"""Settings from the environment, else from `.env`: one object, one database URL.

Each field is the environment variable of its name in capitals (`database_url`: DATABASE_URL).
Your code and the template's machinery (`core/`) read them through `get_settings()`.
"""

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL

from .core import budget, secret_files, urls

# The settings that hold a password: never in repr or errors, and each may come from a file.
SECRETS = ("database_url", "database_migration_url", "database_read_url")
# The project root in a source checkout (src/<package>/settings.py is two levels below it):
# `.env` is found there from any working directory (alembic -c, python -m from src/, an IDE).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@lru_cache
def get_settings() -> "Settings":
    """The process's settings, read once (`get_settings.cache_clear()` reads them again)."""
    return Settings()  # type: ignore[call-arg]  # the fields come from the environment


def invalid_settings(error: ValidationError) -> str:
    """One line for the command line: each invalid setting by its variable, and why."""
    problems = "; ".join(
        # A check of several settings together (loc ()) names them in its message.
        f"{str(p['loc'][0]).upper()}: {p['msg']}" if p["loc"] else p["msg"]
        for p in error.errors()
    )
    return f"error: invalid settings: {problems}"


class Settings(BaseSettings):
    """Every setting of the project; override any of them with an environment variable."""

    model_config = SettingsConfigDict(
        # The project's .env, from any working directory; one in the working directory wins.
        env_file=(PROJECT_ROOT / ".env", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        # A rejected DATABASE_URL would otherwise be echoed, password and all, in the error.
        hide_input_in_errors=True,
    )

    # The database: any URL a provider hands out (postgres://, host lists, sslmode, ...).
    database_url: SecretStr
    # Log every statement with its parameters (development only).
    database_echo: bool = False
    # Connections a process keeps open; more callers wait their turn, in arrival order.
    database_pool_size: int = Field(default=30, ge=1)
    # Connections opened for bursts beyond the pool, closed when given back to a full pool.
    database_max_overflow: int = Field(default=0, ge=0)
    # The connections all WEB_CONCURRENCY processes may hold together: it sizes each pool.
    database_connection_budget: int | None = Field(default=None, ge=1)
    # The processes sharing the server (replicas x workers); uvicorn's --workers too.
    web_concurrency: int = Field(default=1, ge=1)
    # Seconds to wait for a pooled connection, and for a new one to connect (sum <= command).
    database_pool_timeout: float = 10.0
    database_connect_timeout: float = 5.0
    # Seconds before a connection is replaced (under common server and proxy idle timeouts).
    database_pool_recycle: int = 1800
    # A connection idle this long is pinged before use; a slower ping than this replaces it.
    database_pool_ping_idle: float = 30.0
    database_pool_ping_timeout: float = 2.0
    # Seconds a statement may wait for the server before it fails (0: forever).
    database_command_timeout: float = 15.0
    # DATABASE_URL is PgBouncer in transaction mode: no prepared-statement cache.
    database_pgbouncer: bool = False
    # The direct URL migrations use (past PgBouncer or a pooled endpoint); unset: DATABASE_URL.
    database_migration_url: SecretStr | None = None
    # Seconds a migration's statement may wait for a lock, and may run (0: no limit), before
    # the migration rolls back; how often one that waited too long for a lock is tried again.
    database_migration_lock_timeout: float = 5.0
    database_migration_statement_timeout: float = 60.0
    database_migration_retries: int = 3
    # Log statements slower than this many milliseconds, without their parameters (0: off).
    database_slow_statement_ms: float = 0
    # `text` for a terminal, `json` lines for a collector, `auto`: JSON unless on a terminal.
    log_format: Literal["auto", "text", "json"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # A replica for get_read_session(), any form DATABASE_URL takes; unset: the primary.
    database_read_url: SecretStr | None = None
    # Seconds a read waits for the replica before it runs on the primary instead.
    database_read_fallback_timeout: float = 1.0

    # The web service (web.py, core/serve.py).
    # Run the migrations in the app's lifespan, before serving (replicas queue on a lock).
    migrate_on_startup: bool = False
    # Seconds /ready waits for the database before answering 503.
    ready_timeout: float = 2.0
    # Bytes and JSON values a request body may have: more is 413, unread and unparsed.
    request_max_bytes: int = 1024 * 1024
    request_max_json_values: int = 1000
    # Bytes of request line and header fields a request may have: more is 431 (serve).
    request_max_header_bytes: int = 32 * 1024
    # Seconds a client has to send its request, or to read an answer, before it is cut off.
    request_timeout: float = 20.0
    # Count Prometheus metrics; serve shows them on this port only, at /metrics (0: nowhere).
    metrics_enabled: bool = True
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # After SIGTERM, /ready answers 503 this long while requests are still served ...
    shutdown_drain_seconds: float = 5.0
    # ... then the requests in flight get this long (drain + grace < the orchestrator's 30 s).
    shutdown_grace_seconds: int = 20

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, values: Any) -> Any:
        """A secret setting may come from the file `<NAME>_FILE` names (Docker's secrets)."""
        return secret_files.read_into(values, SECRETS)

    @field_validator(*SECRETS)
    @classmethod
    def _check_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Refused now, naming its variable, rather than at the first connection."""
        return urls.checked(value, (info.field_name or "").upper())

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @model_validator(mode="after")
    def _check_pool(self) -> "Settings":
        budget.check_pool_settings(self)
        return self

    @property
    def database_url_object(self) -> URL:
        """The asyncpg URL; its repr and str mask the password."""
        return urls.to_async_url(self.database_url.get_secret_value())

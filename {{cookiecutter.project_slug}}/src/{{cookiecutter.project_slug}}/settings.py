"""Settings from the environment, else from `.env`: one object, one database URL."""

import re
import ssl
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
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

# The project root in a source checkout (src/<package>/settings.py is two levels below it):
# `.env` is found there from any working directory (alembic -c, python -m from src/, an IDE).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

DRIVER = "postgresql+asyncpg"
# Spellings hosting providers hand out; all mean PostgreSQL and get the asyncpg driver.
ACCEPTED_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
TLS_VERSIONS = frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})
# The values allowed where a parameter's value is a word.
CHOICES = {
    "sslmode": SSL_MODES,
    "ssl": SSL_MODES,  # asyncpg's own spelling, as SQLAlchemy users write it
    "sslnegotiation": frozenset({"postgres", "direct"}),
    "ssl_min_protocol_version": TLS_VERSIONS,
    "ssl_max_protocol_version": TLS_VERSIONS,
    "target_session_attrs": frozenset(
        {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}
    ),
    # SCRAM without channel binding is all asyncpg does (no SCRAM-SHA-256-PLUS).
    "channel_binding": frozenset({"disable", "prefer"}),
}
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
# The query parameters that work (the template's docs/operations.md). asyncpg reads them from
# the DSN as libpq does, but for connect_timeout and prepared_statement_cache_size (arguments,
# passed here), and sends application_name and options to the server at startup, as libpq does.
# Any other is refused: asyncpg would send it to the server as a setting; libpq refuses it.
PARAMETERS = frozenset(
    {*CHOICES, *SSL_FILES, "sslpassword", "host", "port", "passfile", "service", "options"}
    | {"application_name", "connect_timeout", "prepared_statement_cache_size"}
)
# The fewest connections a budget may leave a process: migrating takes two at once (env.py
# holds its lock on a second connection), and with one the startup migration would wait
# for itself until the pool timeout.
MIN_POOL = 2
AUTHORITY = re.compile(
    r"(?P<start>[\w+]+://(?:[^:/]*(?::[^@]*)?@)?)(?P<hosts>[^/?]*)(?P<rest>.*)", re.S
)


def _check_port(value: str) -> None:
    if not value.isdigit() or not 0 < int(value) < 65536:
        # The value is not shown: in a mangled URL it could be part of the password.
        raise ValueError("DATABASE_URL has a port that is not a number from 1 to 65535")


def _split_host(entry: str) -> tuple[str, str]:
    """`host`, `host:port`, `[v6]:port`, bare `::1`, or a unix-socket directory."""
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]")
        return host, port.removeprefix(":")
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def _make_url(raw: str) -> URL:
    """Parse `raw`; a libpq host list in the authority (`@a:5432,b:5433/`) moves to `?host=`,
    where SQLAlchemy's URL can hold it and asyncpg reads it alike."""
    # The authority as SQLAlchemy's own pattern reads it: the password runs to the first `@`.
    parts = AUTHORITY.match(raw)
    for entry in parts["hosts"].split(",") if parts else ():
        if port := _split_host(entry)[1]:
            _check_port(port)  # else 99999 would reach the socket as 99999 % 65536
    if parts and "," in parts["hosts"]:
        query_sep = "&" if "?" in parts["rest"] else "?"
        raw = f"{parts['start']}{parts['rest']}{query_sep}host={parts['hosts']}"
    try:
        return make_url(raw)
    except (ArgumentError, ValueError):
        raise ValueError(
            "DATABASE_URL is not a URL like postgresql+asyncpg://user:password@host:5432/name"
        ) from None


def _check_parameters(query: dict[str, str]) -> None:
    """Refuse what asyncpg would misread or send to the server: one line naming it."""
    if query.get("channel_binding") == "require":
        raise ValueError(
            "DATABASE_URL has channel_binding='require'; asyncpg cannot do channel binding"
            " (SCRAM-SHA-256-PLUS): use channel_binding=prefer or disable, or leave it out"
        )
    for name, value in query.items():
        if name not in PARAMETERS:
            raise ValueError(
                f"DATABASE_URL has the parameter {name!r}, which this project does not support"
                " (a server setting goes in options=-c name=value); supported: "
                + ", ".join(sorted(PARAMETERS))
            )
        if name in CHOICES and value not in (allowed := CHOICES[name]):
            raise ValueError(
                f"DATABASE_URL has {name}={value!r}; use one of {', '.join(sorted(allowed))}"
            )
    if "ssl" in query and "sslmode" in query:
        raise ValueError("DATABASE_URL has both ssl and sslmode; keep sslmode")
    numbers = {
        "connect_timeout": query.get("connect_timeout", "0").removeprefix("-"),  # libpq: <= 0
        "prepared_statement_cache_size": query.get("prepared_statement_cache_size", "0"),
    }
    for name, number in numbers.items():
        if not number.isdigit():
            raise ValueError(f"DATABASE_URL has {name}={query[name]!r}; use a whole number")
    for name in SSL_FILES:
        if (path := query.get(name)) and path != "system" and not Path(path).is_file():
            raise ValueError(f"DATABASE_URL has {name}, and {path!r} does not exist")
    sslmode = query.get("sslmode", query.get("ssl"))
    if query.get("sslrootcert") == "system" and sslmode not in (None, "verify-full"):
        raise ValueError("DATABASE_URL has sslrootcert=system, which needs sslmode=verify-full")


def _host_list(host: str, port: str) -> tuple[str, str]:
    """`?host=a,b&port=1,2` with every port checked and, in a list, filled in: the one form
    that SQLAlchemy's URL accepts and asyncpg reads alike."""
    entries = [_split_host(entry) for entry in host.split(",")] if host else [("", "")]
    ports = port.split(",") if port else [""]
    if len(ports) == 1:
        ports *= len(entries)
    if len(ports) != len(entries):
        raise ValueError("DATABASE_URL has a different number of hosts and ports")
    default = "5432" if len(entries) > 1 else ""  # libpq's; SQLAlchemy needs a list's all
    ports = [own or given or default for (_, own), given in zip(entries, ports, strict=True)]
    for number in filter(None, ports):
        _check_port(number)
    hosts = ",".join(f"[{name}]" if ":" in name else name for name, _ in entries)
    return hosts, ",".join(ports)


def to_async_url(raw: str) -> URL:
    """Check `raw` and return it as an asyncpg URL (the URL asyncpg reads as its DSN, see
    `connect_args`); errors name the problem, never the password."""
    url = _make_url(raw)
    if url.drivername not in ACCEPTED_SCHEMES:
        raise ValueError(
            f"DATABASE_URL has the scheme {url.drivername!r}; this project needs PostgreSQL: "
            "postgresql+asyncpg://, postgresql:// or postgres://"
        )
    query: dict[str, str] = {}
    for name, value in url.query.items():
        if isinstance(value, tuple) and name != "host":
            raise ValueError(f"DATABASE_URL has the parameter {name!r} more than once")
        # SQLAlchemy's host list, `?host=a:5432&host=b:5433`, in libpq's spelling.
        query[name] = value if isinstance(value, str) else ",".join(value)
    _check_parameters(query)
    host, port = url.host, url.port
    if "host" in query or "port" in query:
        # libpq: `?host=`/`?port=` win over the authority's. asyncpg reads the authority
        # first, so where the query has either, both go there.
        query.setdefault("host", host or "")
        query.setdefault("port", "" if port is None else str(port))
        query["host"], query["port"] = _host_list(query["host"], query["port"])
        query = {name: value for name, value in query.items() if value}
        host, port = None, None
    return URL.create(DRIVER, url.username, url.password, host, port, url.database, query)


def _system_ssl_context(query: dict[str, str]) -> ssl.SSLContext:
    """libpq 16's sslrootcert=system, the system's trusted CAs and verify-full, as an SSL
    context (asyncpg would open a file named `system`); it takes the query's other TLS
    parameters out, since asyncpg reads none of them beside a context of ours."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["postgresql"])  # PostgreSQL 17's direct TLS needs it
    for name in ("sslrootcert", "sslmode"):
        query.pop(name, None)
    password = query.pop("sslpassword", "")
    if cert := query.pop("sslcert", None):
        context.load_cert_chain(cert, query.pop("sslkey", None), lambda: password)
    if crl := query.pop("sslcrl", None):
        context.load_verify_locations(crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    for name, bound in (("min", "minimum_version"), ("max", "maximum_version")):
        if version := query.pop(f"ssl_{name}_protocol_version", None):
            setattr(context, bound, ssl.TLSVersion[version.replace(".", "_")])
    return context


def connect_args(raw: str) -> dict[str, Any]:
    """The keyword arguments of SQLAlchemy's asyncpg `connect()` for `raw`: `dsn`, which
    asyncpg parses itself (host lists, sslmode, certificate files, passfile, service...), and
    what a DSN cannot tell asyncpg. `database.create_engine()` passes them."""
    url = to_async_url(raw)
    query = {name: str(value) for name, value in url.query.items()}  # one value each, now
    args: dict[str, Any] = {}
    if (timeout := query.pop("connect_timeout", None)) is not None:
        # libpq: zero or negative waits indefinitely.
        args["timeout"] = float(timeout) if int(timeout) > 0 else None
    if (cache := query.pop("prepared_statement_cache_size", None)) is not None:
        args["prepared_statement_cache_size"] = int(cache)
    query.pop("channel_binding", None)  # prefer or disable: what asyncpg does anyway
    if "ssl" in query:
        query["sslmode"] = query.pop("ssl")
    if query.get("sslrootcert") == "system":
        args["ssl"] = _system_ssl_context(query)
    args["dsn"] = url.set(drivername="postgresql", query=query).render_as_string(
        hide_password=False
    )
    return args


class Settings(BaseSettings):
    """Every knob of the data layer; override any of them with an environment variable."""

    model_config = SettingsConfigDict(
        # The project's .env, found from any working directory; a .env in the working
        # directory, where there is one, wins (pydantic-settings: later files override).
        env_file=(PROJECT_ROOT / ".env", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        # A rejected DATABASE_URL would otherwise be echoed, password and all, in the error.
        hide_input_in_errors=True,
    )

    # A secret: pydantic shows it as '**********' in repr, str and validation errors.
    database_url: SecretStr
    database_echo: bool = False
    # Connections a process keeps open once used. No overflow by default: a web process's
    # checked-out connections swing around any limit as requests come and go, and with overflow
    # every connection returned to a full pool was closed and the next burst logged in anew
    # (~40 new connections per 1,000 requests at c=64). A caller beyond the pool waits its turn
    # (in arrival order) instead. 30 + 0: one process's steady concurrency, and three processes
    # fit a default server's 97 connections (the template's docs/operations.md).
    database_pool_size: int = Field(default=30, ge=1)
    # Opened for bursts beyond the pool, closed again when returned to a full pool.
    database_max_overflow: int = Field(default=0, ge=0)
    # The connections all of this deployment's processes may hold together; set, each process
    # sizes its pool from it: DATABASE_CONNECTION_BUDGET // WEB_CONCURRENCY, no overflow.
    database_connection_budget: int | None = Field(default=None, ge=1)
    # The processes sharing the server (replicas x workers). uvicorn reads it as its --workers.
    web_concurrency: int = Field(default=1, ge=1)
    # Seconds a caller waits for a pooled connection, and for a new one to connect, before a
    # 503: with a frozen server, every request fails within DATABASE_COMMAND_TIMEOUT (their
    # sum), never waits longer (asyncpg alone waits 60 s to connect).
    database_pool_timeout: float = 10.0
    database_connect_timeout: float = 5.0
    # Recycle before common server/proxy idle timeouts close a connection under us.
    database_pool_recycle: int = 1800
    # A connection idle in the pool this many seconds is pinged before use (a NAT or proxy
    # may have dropped it silently); busier ones go out unchecked but for the closed check.
    database_pool_ping_idle: float = 30.0
    # Seconds a ping may take before its connection is replaced.
    database_pool_ping_timeout: float = 2.0
    # Seconds a statement may wait for the server before it fails (0: forever), so a peer
    # that vanished silently costs one bounded failure, never a hang. 15: a request's
    # statement ends within the web service's shutdown grace period (serve.py, README).
    database_command_timeout: float = 15.0
    # PgBouncer in transaction mode: no prepared-statement cache (sqlalchemy#6467).
    database_pgbouncer: bool = False
    # The direct URL for migrations (a provider's non-pooled endpoint; the server behind
    # PgBouncer); unset: DATABASE_URL. DATABASE_PGBOUNCER describes DATABASE_URL only.
    database_migration_url: SecretStr | None = None
    # Seconds a migration waits for a table lock before giving up (its `lock_timeout`): the
    # application's queries queue behind a waiting ALTER TABLE, so never wait for long.
    database_migration_lock_timeout: float = 5.0
    # How often `python -m <package>.migrations upgrade` tries again after a lock timeout.
    database_migration_retries: int = 3
    # Log each statement that took longer than this many milliseconds, with its text and
    # duration, never its parameters (0: off, and no cost).
    database_slow_statement_ms: float = 0
    # The log: `text` for a terminal, `json` (one object per line) for a collector, `auto`
    # JSON unless stderr is a terminal. LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_format: Literal["auto", "text", "json"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # A replica (hot standby) for get_read_session(), in any form DATABASE_URL takes; unset or
    # empty: reads run on the primary, with no second engine or pool (the template's
    # docs/operations.md, "Replicas and failover").
    database_read_url: SecretStr | None = None
    # Seconds a read waits for a replica connection (pool or connect) before it runs on the
    # primary instead: a replica that is down costs each read this much at most.
    database_read_fallback_timeout: float = 1.0

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        to_async_url(value.get_secret_value())  # refused now, not on the first connection
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("database_migration_url", "database_read_url")
    @classmethod
    def _check_other_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Checked as DATABASE_URL is, the error naming its own variable; empty: unset."""
        if value is None or not value.get_secret_value():
            return None
        try:
            to_async_url(value.get_secret_value())
        except ValueError as error:
            variable = (info.field_name or "").upper()
            raise ValueError(str(error).replace("DATABASE_URL", variable)) from None
        return value

    @model_validator(mode="after")
    def _check_pool_limits(self) -> "Settings":
        """A budget decides the pool: refused beside an explicit pool size, or too small."""
        if self.database_connection_budget is None:
            return self
        explicit = {"database_pool_size", "database_max_overflow"} & self.model_fields_set
        if explicit:
            raise ValueError(
                "DATABASE_CONNECTION_BUDGET sizes the pool itself: unset "
                + " and ".join(sorted(name.upper() for name in explicit))
            )
        if self.database_connection_budget < MIN_POOL * self.web_concurrency:
            raise ValueError(
                f"DATABASE_CONNECTION_BUDGET={self.database_connection_budget} leaves less than "
                f"{MIN_POOL} connections to each of WEB_CONCURRENCY={self.web_concurrency} "
                "processes (a migration on startup takes two)"
            )
        return self

    @property
    def pool_limits(self) -> tuple[int, int]:
        """This process's (pool size, max overflow): DATABASE_CONNECTION_BUDGET shared by
        WEB_CONCURRENCY processes when a budget is set, else DATABASE_POOL_SIZE and
        DATABASE_MAX_OVERFLOW."""
        if self.database_connection_budget is None:
            return self.database_pool_size, self.database_max_overflow
        return self.database_connection_budget // self.web_concurrency, 0

    def for_migrations(self) -> "Settings":
        """These settings with DATABASE_MIGRATION_URL as the URL, when it is set: a direct
        connection, so without PgBouncer's transaction-mode workarounds."""
        if self.database_migration_url is None:
            return self
        # Only the fields given: a default given explicitly would count as chosen.
        values = {name: getattr(self, name) for name in self.model_fields_set}
        values |= {"database_url": self.database_migration_url, "database_pgbouncer": False}
        return type(self).model_validate(values)

    @property
    def database_url_object(self) -> URL:
        """The asyncpg URL; its repr and str mask the password."""
        return to_async_url(self.database_url.get_secret_value())

    @property
    def database_connect_args(self) -> dict[str, Any]:
        """The driver's connect arguments for `database_url` (see `connect_args`)."""
        return connect_args(self.database_url.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment


def invalid_settings(error: ValidationError) -> str:
    """One line for the command line: each invalid setting by its variable, and why."""
    problems = "; ".join(
        # A check of several settings together (loc ()) names them in its message.
        f"{str(p['loc'][0]).upper()}: {p['msg']}" if p["loc"] else p["msg"]
        for p in error.errors()
    )
    return f"error: invalid settings: {problems}"

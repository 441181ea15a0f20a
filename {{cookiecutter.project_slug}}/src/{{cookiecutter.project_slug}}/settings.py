"""Settings from the environment, else from `.env`: one object, one database URL."""

import re
import ssl
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

# The project root in a source checkout (src/<package>/settings.py is two levels below it):
# `.env` is found there from any working directory (alembic -c, python -m from src/, an IDE).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

DRIVER = "postgresql+asyncpg"
# Spellings hosting providers hand out; all mean PostgreSQL and get the asyncpg driver.
ACCEPTED_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})
# libpq's `sslmode` values; asyncpg takes the same words through its `ssl` argument.
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# Modes that need a certificate check or a client certificate: an SSLContext of our own.
ENCRYPTED_MODES = frozenset({"require", "verify-ca", "verify-full"})
# asyncpg's SessionAttribute values, the same words as libpq's.
SESSION_ATTRS = frozenset(
    {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}
)
# asyncpg speaks SCRAM without channel binding (its SCRAM-SHA-256-PLUS is not implemented).
CHANNEL_BINDINGS = frozenset({"disable", "prefer"})
AUTHORITY = re.compile(
    r"(?P<start>[\w+]+://(?:[^:/]*(?::[^@]*)?@)?)(?P<hosts>[^/?]*)(?P<rest>.*)", re.S
)
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslpassword")
# Query parameters understood here (README, "Configure"); any other one is refused.
# `ssl` is asyncpg's spelling of sslmode; `prepared_statement_cache_size` is SQLAlchemy's.
SUPPORTED_PARAMETERS = frozenset(
    {
        "application_name",
        "channel_binding",
        "connect_timeout",
        "host",
        "options",
        "port",
        "prepared_statement_cache_size",
        "ssl",
        "sslmode",
        *SSL_FILES,
        "target_session_attrs",
    }
)


def _make_url(raw: str) -> URL:
    """Parse `raw`; a libpq host list in the authority (`@a:5432,b:5433/`) moves to `?host=`."""
    # The authority as SQLAlchemy's own pattern reads it: the password runs to the first `@`.
    parts = AUTHORITY.match(raw)
    if parts and "," in parts["hosts"]:
        query_sep = "&" if "?" in parts["rest"] else "?"
        raw = f"{parts['start']}{parts['rest']}{query_sep}host={parts['hosts']}"
    try:
        return make_url(raw)
    except (ArgumentError, ValueError):
        raise ValueError(
            "DATABASE_URL is not a URL like postgresql+asyncpg://user:password@host:5432/name"
        ) from None


def _split_host(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port`, bare `::1`, or a unix-socket directory."""
    host, port = entry, ""
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]")
        port = port.removeprefix(":")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    return host, _port(port) if port else None


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        # The value is not shown: in a mangled URL it could be part of the password.
        raise ValueError("DATABASE_URL has a port that is not a number from 1 to 65535")
    return int(value)


def _hosts(url: URL, query: dict[str, str | tuple[str, ...]]) -> URL:
    """Host lists (libpq `host=a,b`, SQLAlchemy's `host=a:1&host=b:2`) and socket directories,
    in the one form SQLAlchemy hands asyncpg: `?host=a,b&port=1,2`, every port filled in."""
    host_param = query.pop("host", None)
    port_param = query.pop("port", None)
    if host_param is None and port_param is None:
        return url
    if isinstance(port_param, tuple):
        raise ValueError("DATABASE_URL has more than one port parameter; use port=5432,5433")
    if isinstance(host_param, str):
        host_param = tuple(host_param.split(","))
    entries = [_split_host(entry) for entry in host_param or (url.host or "",)]
    ports = [_port(p) for p in port_param.split(",")] if port_param else [url.port]
    if len(ports) == 1:
        ports *= len(entries)
    if len(ports) != len(entries):
        raise ValueError("DATABASE_URL has a different number of hosts and ports")
    pairs = [(host, own or port) for (host, own), port in zip(entries, ports, strict=True)]
    if len(pairs) == 1 and not pairs[0][0].startswith("/"):
        return url._replace(host=pairs[0][0] or None, port=pairs[0][1])
    if len(pairs) == 1:  # a unix-socket directory cannot be the URL's host: it stays a parameter
        return url._replace(host=None, port=pairs[0][1]).update_query_dict({"host": pairs[0][0]})
    if not all(host for host, _ in pairs):
        raise ValueError("DATABASE_URL has an empty host in its host list")
    # asyncpg needs every port of a host list (SQLAlchemy refuses gaps); libpq's default is 5432.
    # (`URL.set` leaves a field alone when given None: `_replace` clears it.)
    return url._replace(host=None, port=None).update_query_dict(
        {
            "host": ",".join(host for host, _ in pairs),
            "port": ",".join(str(port or 5432) for _, port in pairs),
        }
    )


def _parse(raw: str) -> tuple[URL, dict[str, Any]]:
    """The asyncpg URL, and the connect arguments a URL cannot carry for asyncpg."""
    url = _make_url(raw)
    if url.drivername not in ACCEPTED_SCHEMES:
        raise ValueError(
            f"DATABASE_URL has the scheme {url.drivername!r}; this project needs PostgreSQL: "
            "postgresql+asyncpg://, postgresql:// or postgres://"
        )
    query = dict(url.query)
    supported = ", ".join(sorted(SUPPORTED_PARAMETERS))
    for name, value in query.items():
        if name not in SUPPORTED_PARAMETERS:
            raise ValueError(
                f"DATABASE_URL has the parameter {name!r}, which this project does not"
                f" support; supported: {supported}"
            )
        if isinstance(value, tuple) and name != "host":
            raise ValueError(f"DATABASE_URL has the parameter {name!r} more than once")
    url = _hosts(url.set(drivername=DRIVER, query={}), query)
    single: dict[str, str] = {k: v for k, v in query.items() if isinstance(v, str)}
    keep: dict[str, str] = {}  # parameters asyncpg takes as they are, from the URL
    args: dict[str, Any] = {}  # parameters translated into asyncpg's connect arguments

    if "ssl" in single and "sslmode" in single:
        raise ValueError("DATABASE_URL has both ssl and sslmode; keep sslmode")
    sslmode = single.get("sslmode", single.get("ssl"))
    if sslmode is None and single.get("sslrootcert") == "system":
        sslmode = "verify-full"  # libpq 16: the system's CAs imply verify-full
    if sslmode is not None:
        if sslmode not in SSL_MODES:
            raise ValueError(
                f"DATABASE_URL has sslmode={sslmode!r}; use one of {', '.join(sorted(SSL_MODES))}"
            )
        # Kept in the URL too: an engine built from the URL alone still insists on TLS.
        keep["ssl"] = sslmode
    files = {name: single[name] for name in SSL_FILES if name in single}
    if sslmode in ENCRYPTED_MODES:
        args["ssl"] = _ssl_context(sslmode, **files)
    elif files:
        raise ValueError(
            f"DATABASE_URL has {', '.join(files)} but sslmode={sslmode or 'prefer'};"
            " certificates need sslmode=require, verify-ca or verify-full"
        )

    if (timeout := single.get("connect_timeout")) is not None:
        try:
            seconds = int(timeout)
        except ValueError:
            raise ValueError(
                f"DATABASE_URL has connect_timeout={timeout!r}; use whole seconds"
            ) from None
        # libpq: zero or negative waits indefinitely.
        args["timeout"] = float(seconds) if seconds > 0 else None

    server_settings = {
        name: single[name] for name in ("application_name", "options") if name in single
    }
    if server_settings:
        # Startup parameters, as libpq sends them: the server itself parses `options`
        # (`-c name=value`, `--name=value`) and refuses a bad one when the connection opens.
        args["server_settings"] = server_settings

    if (attrs := single.get("target_session_attrs")) is not None:
        if attrs not in SESSION_ATTRS:
            raise ValueError(
                f"DATABASE_URL has target_session_attrs={attrs!r};"
                f" use one of {', '.join(sorted(SESSION_ATTRS))}"
            )
        keep["target_session_attrs"] = attrs

    if (binding := single.get("channel_binding")) is not None and binding not in CHANNEL_BINDINGS:
        raise ValueError(
            f"DATABASE_URL has channel_binding={binding!r}; asyncpg cannot do channel binding"
            " (SCRAM-SHA-256-PLUS): use channel_binding=prefer or disable, or leave it out"
        )

    if (cache := single.get("prepared_statement_cache_size")) is not None:
        if not cache.isdigit():
            raise ValueError(
                f"DATABASE_URL has prepared_statement_cache_size={cache!r}; use a whole number"
            )
        keep["prepared_statement_cache_size"] = cache
    return url.update_query_dict(keep), args


def _default_file(name: str) -> str | None:
    """libpq's fallback for a certificate file: ~/.postgresql/<name>, when it exists."""
    path = Path.home() / ".postgresql" / name
    return str(path) if path.is_file() else None


def _ssl_context(
    sslmode: str,
    sslrootcert: str | None = None,
    sslcert: str | None = None,
    sslkey: str | None = None,
    sslpassword: str | None = None,
) -> ssl.SSLContext:
    """An SSLContext doing what libpq does for `sslmode` with these files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # libpq's default ssl_min_protocol_version
    context.check_hostname = sslmode == "verify-full"
    rootcert = sslrootcert or _default_file("root.crt")
    # libpq: `require` with a root certificate at hand verifies the chain, like verify-ca.
    if rootcert is None and sslmode != "require":
        raise ValueError(
            f"DATABASE_URL has sslmode={sslmode} but no sslrootcert (the CA certificate file,"
            " or sslrootcert=system for the system's trusted CAs), and ~/.postgresql/root.crt"
            " does not exist"
        )
    if rootcert == "system" and sslmode != "verify-full":
        raise ValueError("DATABASE_URL has sslrootcert=system, which needs sslmode=verify-full")
    if rootcert is None:
        context.verify_mode = ssl.CERT_NONE  # encrypted, but anyone may be at the other end
    elif rootcert == "system":
        context.load_default_certs()
    else:
        _load(context.load_verify_locations, "sslrootcert", rootcert, cafile=rootcert)
    if sslkey and not sslcert:
        raise ValueError("DATABASE_URL has sslkey but no sslcert")
    if cert := sslcert or _default_file("postgresql.crt"):
        key = sslkey or (None if sslcert else _default_file("postgresql.key"))
        # Never None: OpenSSL would prompt on the terminal for an encrypted key's passphrase.
        password = sslpassword or ""
        name, hint = "sslcert/sslkey", " (a wrong sslpassword?)"
        _load(context.load_cert_chain, name, cert, cert, key, lambda: password, hint=hint)
    return context


def _load(loader: Any, name: str, path: str, *args: Any, hint: str = "", **kwargs: Any) -> None:
    """Run an SSLContext loader; a missing or unreadable file is one line naming it."""
    try:
        loader(*args, **kwargs)
    except FileNotFoundError:
        raise ValueError(f"DATABASE_URL has {name}, and {path!r} does not exist") from None
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"DATABASE_URL has {name}, and {path!r} cannot be used{hint}: {error}"
        ) from None


def to_async_url(raw: str) -> URL:
    """Parse a PostgreSQL URL into an asyncpg one; errors name the problem, never the password."""
    return _parse(raw)[0]


def connect_args(raw: str) -> dict[str, Any]:
    """What `raw` asks of asyncpg that its URL cannot carry: an SSL context, the connect
    timeout, server settings. Pass them to `create_async_engine(..., connect_args=...)`."""
    return _parse(raw)[1]


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

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        _parse(value.get_secret_value())  # certificate files included: refused now, not later
        return value

    @field_validator("database_migration_url")
    @classmethod
    def _check_database_migration_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                _parse(value.get_secret_value())
            except ValueError as error:
                raise ValueError(
                    str(error).replace("DATABASE_URL", "DATABASE_MIGRATION_URL")
                ) from None
        return value

    def for_migrations(self) -> "Settings":
        """These settings with DATABASE_MIGRATION_URL as the URL, when it is set: a direct
        connection, so without PgBouncer's transaction-mode workarounds."""
        if self.database_migration_url is None:
            return self
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values |= {"database_url": self.database_migration_url, "database_pgbouncer": False}
        return type(self).model_validate(values)

    @cached_property
    def _parsed(self) -> tuple[URL, dict[str, Any]]:
        # Once per settings object, not per use: the SSL context reads certificate files.
        return _parse(self.database_url.get_secret_value())

    @property
    def database_url_object(self) -> URL:
        """The asyncpg URL; its repr and str mask the password."""
        return self._parsed[0]

    @property
    def database_connect_args(self) -> dict[str, Any]:
        """The `connect_args` that go with `database_url_object` (see `connect_args`)."""
        return dict(self._parsed[1])


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment


def invalid_settings(error: ValidationError) -> str:
    """One line for the command line: each invalid setting by its variable, and why."""
    problems = "; ".join(f"{str(p['loc'][0]).upper()}: {p['msg']}" for p in error.errors())
    return f"error: invalid settings: {problems}"

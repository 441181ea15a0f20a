"""Database URLs as hosting providers and DBAs hand them out, checked and made into what the
driver takes: any `postgres://`, `postgresql://` or `postgresql+asyncpg://` URL, libpq's host
lists and query parameters (TLS, timeouts, `target_session_attrs`, ...), errors that name the
problem and never the password.

SQLAlchemy's `make_url` parses the URL; asyncpg parses the rest itself (its DSN, as libpq
does): this module only refuses what either would misread, and passes what a DSN cannot say as
connect arguments. `docs/operations.md` lists what works.
"""

import re
import ssl
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

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
# The query parameters that work (docs/operations.md). asyncpg reads them from
# the DSN as libpq does, but for connect_timeout and prepared_statement_cache_size (arguments,
# passed here), and sends application_name and options to the server at startup, as libpq does.
# Any other is refused: asyncpg would send it to the server as a setting; libpq refuses it.
PARAMETERS = frozenset(
    {*CHOICES, *SSL_FILES, "sslpassword", "host", "port", "passfile", "service", "options"}
    | {"application_name", "connect_timeout", "prepared_statement_cache_size"}
)
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


def checked(value: SecretStr | None, variable: str) -> SecretStr | None:
    """`value`, the setting `variable`, checked as a database URL: errors name the variable.
    An optional URL (all but DATABASE_URL) that is empty is unset: None."""
    if value is None or (variable != "DATABASE_URL" and not value.get_secret_value()):
        return None
    try:
        to_async_url(value.get_secret_value())
    except ValueError as error:
        raise ValueError(str(error).replace("DATABASE_URL", variable)) from None
    return value

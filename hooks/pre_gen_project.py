"""Refuse bad answers before cookiecutter writes anything: one line per problem, exit 1."""

import ipaddress
import keyword
import os
import re
import sys
from collections.abc import Mapping

# Package names that would shadow the standard library or a dependency when imported.
RESERVED_SLUGS = frozenset(sys.stdlib_module_names) | {
    "alembic",
    "asyncpg",
    "conftest",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "tests",
}
# One label of a host name (RFC 1123), plus `_`: Docker Compose service and container names,
# which Docker's DNS resolves and users put in db_host, often have one (`postgres_db`).
HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
# PostgreSQL keeps names to 63 bytes (NAMEDATALEN - 1) and truncates longer ones silently.
NAME_BYTES = 63


def name_problems(name: str) -> list[str]:
    if not name.strip():
        return ["project_name: must not be empty"]
    if not name.isprintable():
        return ["project_name: must be one line of printable text (no newlines or tabs)"]
    return []


def slug_problems(slug: str) -> list[str]:
    if not slug.isidentifier() or not slug.isascii() or slug != slug.lower():
        return [
            f"project_slug: {slug!r} is not a lowercase Python identifier "
            "(use a-z, 0-9 and _, not starting with a digit)"
        ]
    if keyword.iskeyword(slug):
        return [f"project_slug: {slug!r} is a Python keyword; choose another name"]
    if slug in RESERVED_SLUGS:
        return [
            f"project_slug: {slug!r} would shadow the standard library or a dependency "
            "when imported; choose another name"
        ]
    return []


def port_problems(port: str) -> list[str]:
    if port.strip().isdigit() and 1 <= int(port) <= 65535:
        return []
    return [f"db_port: {port!r} is not a port number from 1 to 65535"]


def is_ip_literal(host: str) -> bool:
    """IPv4 (`127.0.0.1`), or IPv6 bare (`::1`) or bracketed (`[::1]`), without a zone id."""
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return False
    if bracketed and address.version != 6:
        return False  # brackets are for IPv6 only
    return "%" not in host  # a zone id (`fe80::1%eth0`) would need escaping in the URL


def is_host_name(host: str) -> bool:
    """Dot-separated labels of 1-63 letters, digits, `-` and `_`, no `-` at either end."""
    labels = host.split(".")
    return (
        len(host) <= 253
        and all(HOST_LABEL.match(label) for label in labels)
        # All digits at the end reads as an IPv4 address (`999.1.1.1`, `12345`), not a name.
        and not labels[-1].isdigit()
    )


def host_problems(host: str) -> list[str]:
    if is_ip_literal(host) or is_host_name(host):
        return []
    return [
        f"db_host: {host!r} is not a host name or IP address (a name is dot-separated labels "
        "of 1-63 letters, digits, '-' and '_'; IPv6 as ::1 or [::1])"
    ]


# The app's role is db_user with this suffix (post_gen_project.APP_ROLE_SUFFIX): db_user
# leaves room for it.
APP_ROLE_SUFFIX = "_app"


def role_problems(field: str, name: str, room: int = 0) -> list[str]:
    """What PostgreSQL would refuse or change in a role or database name (with `room` bytes
    left for a suffix)."""
    if not name.strip():
        return [f"{field}: must not be empty"]
    if name.startswith("pg_"):
        return [
            f"{field}: {name!r} starts with 'pg_', the prefix PostgreSQL reserves for its own "
            "roles and objects"
        ]
    if len(name.encode()) > NAME_BYTES - room:
        suffix = f", and the app's role adds {APP_ROLE_SUFFIX!r} to it" if room else ""
        return [
            f"{field}: {len(name.encode())} bytes is too long; PostgreSQL keeps names to "
            f"{NAME_BYTES} bytes (UTF-8) and would cut it short{suffix}"
        ]
    return []


def password_problems(environ: Mapping[str, str]) -> list[str]:
    """DATABASE_PASSWORD (read by the post-gen hook) must be text that .env can hold."""
    try:
        environ.get("DATABASE_PASSWORD", "").encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as surrogates
        return ["DATABASE_PASSWORD: is not valid UTF-8 text"]
    return []


def problems(name: str, slug: str, host: str, port: str, user: str, database: str) -> list[str]:
    return [
        *name_problems(name),
        *slug_problems(slug),
        *host_problems(host),
        *port_problems(port),
        *role_problems("db_user", user, room=len(APP_ROLE_SUFFIX)),
        *role_problems("db_name", database),
    ]


def main() -> int:
    found = problems(
        name={{cookiecutter.project_name | literal}},
        slug={{cookiecutter.project_slug | literal}},
        host={{cookiecutter.db_host | literal}},
        port={{cookiecutter.db_port | literal}},
        user={{cookiecutter.db_user | literal}},
        database={{cookiecutter.db_name | literal}},
    ) + password_problems(os.environ)
    for problem in found:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

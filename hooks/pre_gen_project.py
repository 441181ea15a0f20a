"""Refuse bad answers before cookiecutter writes anything: one line per problem, exit 1."""

import keyword
import re
import sys

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
HOST_PATTERN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*|[A-Za-z0-9._-]+)$")


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


def host_problems(host: str) -> list[str]:
    if HOST_PATTERN.match(host):
        return []
    return [
        f"db_host: {host!r} is not a host name or IP address "
        "(letters, digits, '.', '-', '_'; IPv6 as [::1]; no spaces or slashes)"
    ]


def required_problems(field: str, value: str) -> list[str]:
    return [] if value.strip() else [f"{field}: must not be empty"]


def problems(name: str, slug: str, host: str, port: str, user: str, database: str) -> list[str]:
    return [
        *name_problems(name),
        *slug_problems(slug),
        *host_problems(host),
        *port_problems(port),
        *required_problems("db_user", user),
        *required_problems("db_name", database),
    ]


def main() -> int:
    found = problems(
        name={{cookiecutter.project_name | literal}},
        slug={{cookiecutter.project_slug | literal}},
        host={{cookiecutter.db_host | literal}},
        port={{cookiecutter.db_port | literal}},
        user={{cookiecutter.db_user | literal}},
        database={{cookiecutter.db_name | literal}},
    )
    for problem in found:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

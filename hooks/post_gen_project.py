"""Write the baked project's private `.env` and say what to do next (standard library only)."""

import os
import secrets
import shutil
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

PASSWORD_VARIABLE = "DATABASE_PASSWORD"
# The app's role is the owner's name with this suffix: it reads and writes rows, nothing more
# (the pre-gen hook leaves room for it in db_user).
APP_ROLE_SUFFIX = "_app"
PASSWORD_BYTES = 24  # token_urlsafe(24) gives 32 characters, about 192 bits
# Hosts `make db` can serve: scripts/local_postgres.py starts a server on this machine only.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
# What "private" can mean: Windows has no modes; there .env inherits its folder's ACLs.
ENV_PRIVACY = "as private as its folder" if os.name == "nt" else "mode 0600"


def make_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def database_url(user: str, password: str, host: str, port: str, database: str) -> str:
    """Build the URL with every part percent-escaped, so `@ : / % # ?` in any part stay data."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal must be bracketed in a URL
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"postgresql+asyncpg://{credentials}@{host}:{int(port)}/{quote(database, safe='')}"


def compose_quote(value: str) -> str:
    """Quote a value so Docker Compose reads it back exactly from `.env`, whatever it holds.

    Double quotes with `\\`, `"` and `$` escaped: compose then expands no `$NAME`, and any
    character survives. (Single quotes cannot: compose has no way to write a backslash that
    comes right before a quote inside them.)
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def given_password(environ: Mapping[str, str]) -> str | None:
    """DATABASE_PASSWORD, verbatim, when set and not empty.

    Read here, never a cookiecutter variable: cookiecutter writes its context to the replay
    file before any hook runs, renders command-line answers as Jinja, and update tools record
    it in committed files. The environment reaches this hook and nothing else.
    """
    return environ.get(PASSWORD_VARIABLE) or None


# O_BINARY (Windows only): no second newline translation below Python's own.
WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def write_env(path: Path, app_url: str, migration_url: str, compose: dict[str, str]) -> None:
    """Create `.env` readable by its owner only; single quotes keep dotenv from expanding the URLs.

    `compose` holds the same server's parts for compose.yaml, which cannot take a URL apart.
    """
    with os.fdopen(os.open(path, WRITE, 0o600), "w", encoding="utf-8", newline="\n") as env:
        # Private before the secret goes in: an existing file keeps its mode through O_CREAT.
        # os.chmod, not os.fchmod, which Windows has only from Python 3.13. On Windows a mode
        # only sets or clears the read-only flag: the file is as private as its folder's ACLs.
        os.chmod(path, 0o600)
        env.write("# Private: holds the database passwords. Never commit this file.\n")
        env.write("# The app's role: it reads and writes rows, nothing more.\n")
        env.write(f"DATABASE_URL='{app_url}'\n")
        env.write("# The role that owns the schema: the migrations run as it.\n")
        env.write(f"DATABASE_MIGRATION_URL='{migration_url}'\n")
        env.write("# For compose.yaml (Docker): the same server; its secrets are in .secrets/.\n")
        env.writelines(f"{name}={compose_quote(value)}\n" for name, value in compose.items())


def write_secrets(directory: Path, secrets: dict[str, str]) -> None:
    """compose.yaml's secrets, a file each, in a directory only its owner may enter. Compose
    mounts each file into the containers, where other users (the app's, postgres) read it:
    so the files are readable (0644), the directory is what keeps them private (0700)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    for name, value in secrets.items():
        path = directory / name
        with os.fdopen(os.open(path, WRITE, 0o644), "w", encoding="utf-8", newline="\n") as file:
            file.write(value)


def userlist_line(user: str, password: str) -> str:
    """A line of PgBouncer's auth file: both fields double-quoted, inner quotes doubled."""
    return " ".join('"{}"'.format(field.replace('"', '""')) for field in (user, password))


# Files (and folders) only the web service uses, removed when the project is baked without one.
WEB_FRAMEWORK_FILES = {
    "fastapi": [
        "web.mk",
        "src/{slug}/web.py",
        "src/{slug}/routes.py",
        "src/{slug}/schemas.py",
        "src/{slug}/core/web.py",
        "src/{slug}/core/serve.py",
        "src/{slug}/core/observability.py",
        "src/{slug}/core/tracing.py",
        "src/{slug}/core/client_limits.py",
        "tests/test_web.py",
        "Dockerfile",
        ".dockerignore",
        "deploy",
        "scripts/deploy.sh",
    ],
}
# settings.py's block of the web service's fields starts with this line and ends at the
# first blank line after it (Jinja stays out of Python modules: the hook cuts it instead).
WEB_SETTINGS = "    # The web service (web.py, core/serve.py)."


def remove_unused_files(slug: str, web_framework: str) -> None:
    """Delete the files of every web framework but the chosen one, and without a web service
    the web service's settings."""
    for framework, paths in WEB_FRAMEWORK_FILES.items():
        if framework != web_framework:
            for name in paths:
                path = Path(name.format(slug=slug))
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    if web_framework == "none":
        remove_web_settings(Path("src", slug, "settings.py"))


def remove_web_settings(path: Path) -> None:
    """Cut settings.py's block of the web service's fields (WEB_SETTINGS to a blank line)."""
    # newline="": a checkout with CRLF line ends keeps them.
    with path.open(encoding="utf-8", newline="") as file:
        lines = file.readlines()
    start = [line.rstrip() for line in lines].index(WEB_SETTINGS)
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    with path.open("w", encoding="utf-8", newline="") as file:
        file.writelines(lines[:start] + lines[end + 1 :])


def next_steps(
    slug: str,
    *,
    local_database: bool,
    password_given: bool,
    has_make: bool,
    has_uv: bool,
    windows: bool = False,
) -> str:
    """The exact commands from here to passing tests, for the tools this machine has, and how
    to point the project at a database that already exists."""
    # Windows: the Makefile needs a POSIX shell, and scripts/local_postgres.py says to use
    # Docker there; a venv keeps its programs in Scripts\, not bin/.
    database = (
        "docker compose up -d --wait" if windows else "python scripts/local_postgres.py start"
    )
    if has_make and not windows:
        steps = [
            ("make install", "uv sync" if has_uv else "no uv found: python3 -m venv, then pip"),
            ("make db", "PostgreSQL matching .env, no Docker (or: docker compose up -d --wait db)"),
            ("make migrate", "alembic upgrade head"),
            ("make test", "pytest -n auto; `make` alone lists every task"),
        ]
    elif has_uv:
        steps = [
            ("uv sync", ""),
            (database if windows else f"uv run {database}", "PostgreSQL matching .env"),
            ("uv run alembic upgrade head", ""),
            ("uv run pytest -n auto", ""),
        ]
    else:
        python, venv = ("py", ".venv\\Scripts\\") if windows else ("python3", ".venv/bin/")
        pip = f"{venv}python -m pip install"
        venv_and_pip = f'{python} -m venv .venv && {pip} "pip>=25.1" && {pip} -e . --group dev'
        steps = [
            (venv_and_pip, ""),
            (database if windows else f"{venv}{database}", "PostgreSQL matching .env"),
            (f"{venv}alembic upgrade head", ""),
            (f"{venv}pytest -n auto", ""),
        ]
    if not local_database:
        steps[1] = ("", "migrate and test use the PostgreSQL server named in .env")
    width = max(len(command) for command, comment in steps if comment)
    existing = (
        f"For a database that exists already, replace DATABASE_MIGRATION_URL in {slug}/.env "
        "with the URL your provider gives (any postgresql:// form), or bake again with "
        f"{PASSWORD_VARIABLE}=<its password> set in the environment; DATABASE_URL is the "
        "app's role, which reads and writes rows only: create it there "
        "(docs/operations.md, Roles and secrets), or give it the same URL."
    )
    if not (local_database or password_given):  # a remote server cannot know it yet
        existing = f"The passwords in .env are new random ones. {existing}"
    return "\n".join(
        [
            "",
            f"Created {slug}/. Its connection strings are in {slug}/.env "
            f"({ENV_PRIVACY}, git-ignored).",
            "Next steps:",
            f"  cd {slug}",
            *(
                f"  {command:<{width}}  # {comment}" if comment else f"  {command}"
                for command, comment in steps
            ),
            textwrap.fill(existing, width=88, break_on_hyphens=False),
            "",
        ]
    )


def main() -> int:
    slug = {{cookiecutter.project_slug | literal}}
    user = {{cookiecutter.db_user | literal}}
    host = {{cookiecutter.db_host | literal}}
    port = {{cookiecutter.db_port | literal}}
    database = {{cookiecutter.db_name | literal}}
    web_framework = {{cookiecutter.web_framework | literal}}
    given = given_password(os.environ)
    password, app_password = given or make_password(), make_password()
    app_user = user + APP_ROLE_SUFFIX
    compose = {"POSTGRES_USER": user, "POSTGRES_DB": database, "POSTGRES_PORT": str(int(port))}
    secrets = {"postgres_password": password, "app_password": app_password}
    if web_framework == "fastapi":  # the stack in compose.yaml reaches the `db` service
        secrets |= {
            "database_url": database_url(app_user, app_password, "db", "5432", database),
            "migration_url": database_url(user, password, "db", "5432", database),
            "pgbouncer_database_url": database_url(
                app_user, app_password, "pgbouncer", "5432", database
            ),
            "pgbouncer_userlist": userlist_line(app_user, app_password) + "\n",
        }
    remove_unused_files(slug, web_framework)
    try:
        write_env(
            Path(".env"),
            database_url(app_user, app_password, host, port, database),
            database_url(user, password, host, port, database),
            compose,
        )
        write_secrets(Path(".secrets"), secrets)
    except OSError as error:  # names the file and the reason, never the password
        print(f"ERROR: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    print(
        next_steps(
            slug,
            local_database=host in LOCAL_HOSTS,
            password_given=given is not None,
            has_make=shutil.which("make") is not None,
            has_uv=shutil.which("uv") is not None,
            windows=sys.platform == "win32",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

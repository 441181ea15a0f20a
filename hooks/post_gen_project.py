"""Write the baked project's private `.env` and say what to do next (standard library only)."""

import json
import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import quote

PASSWORD_BYTES = 24  # token_urlsafe(24) gives 32 characters, about 192 bits
# Hosts `make db` can serve: scripts/local_postgres.py starts a server on this machine only.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


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


def write_env(path: Path, url: str, compose: dict[str, str]) -> None:
    """Create `.env` readable by its owner only; single quotes keep dotenv from expanding the URL.

    `compose` holds the same server's parts for compose.yaml, which cannot take a URL apart.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # Private before the secret goes in: an existing file keeps its mode through O_CREAT.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as env:
        env.write("# Private: holds the database password. Never commit this file.\n")
        env.write(f"DATABASE_URL='{url}'\n")
        env.write("# For compose.yaml (Docker): the same server. Keep in step with DATABASE_URL.\n")
        env.writelines(f"{name}={compose_quote(value)}\n" for name, value in compose.items())


def replay_file(repo_dir: str) -> Path | None:
    """Where cookiecutter saved this run's answers (for --replay), if we can tell."""
    try:  # cookiecutter runs this hook with its own interpreter, so it is importable here
        from cookiecutter.config import get_user_config
    except ImportError:
        return None
    # The default config, or COOKIECUTTER_CONFIG's; a --config-file elsewhere is not visible.
    replay_dir = Path(get_user_config()["replay_dir"])
    return replay_dir / f"{Path(repo_dir).name}.json"


def forget_password(replay: Path | None) -> None:
    """Blank the password in cookiecutter's replay file: .env must be its only copy."""
    if replay is None or not replay.is_file():
        return
    replayed = json.loads(replay.read_text(encoding="utf-8"))
    # Both the answers ("cookiecutter") and the defaults with overrides ("_cookiecutter").
    sections = [section for section in replayed.values() if isinstance(section, dict)]
    if any(section.get("db_password") for section in sections):
        for section in sections:
            section["db_password"] = ""  # a replay then generates a new password
        replay.write_text(json.dumps(replayed, indent=2), encoding="utf-8")


# Files only the web service uses, removed when the project is baked without one.
WEB_FRAMEWORK_FILES = {
    "fastapi": [
        "web.mk",
        "src/{slug}/web.py",
        "src/{slug}/schemas.py",
        "tests/test_web.py",
        "tests/test_web_server.py",
    ],
}


def remove_unused_files(slug: str, web_framework: str) -> None:
    """Delete the files of every web framework but the chosen one."""
    for framework, paths in WEB_FRAMEWORK_FILES.items():
        if framework != web_framework:
            for path in paths:
                Path(path.format(slug=slug)).unlink()


def next_steps(slug: str, *, local_database: bool, has_make: bool, has_uv: bool) -> str:
    """The exact commands from here to passing tests, for the tools this machine has."""
    if has_make:
        steps = [
            ("make install", "uv sync" if has_uv else "no uv found: python3 -m venv, then pip"),
            ("make db", "PostgreSQL matching .env, no Docker (or: docker compose up -d --wait)"),
            ("make migrate", "alembic upgrade head"),
            ("make test", "pytest; `make` alone lists every task"),
        ]
    else:
        venv_and_pip = (
            'python3 -m venv .venv && .venv/bin/python -m pip install "pip>=25.1" '
            "&& .venv/bin/python -m pip install -e . --group dev"
        )
        steps = [
            ("uv sync" if has_uv else venv_and_pip, ""),
            (".venv/bin/python scripts/local_postgres.py start", "PostgreSQL matching .env"),
            (".venv/bin/alembic upgrade head", ""),
            (".venv/bin/pytest", ""),
        ]
    if not local_database:
        steps[1] = ("", "migrate and test use the PostgreSQL server named in .env")
    width = max(len(command) for command, comment in steps if comment)
    return "\n".join(
        [
            "",
            f"Created {slug}/ with its connection string in {slug}/.env (mode 0600, git-ignored).",
            "Next steps:",
            f"  cd {slug}",
            *(
                f"  {command:<{width}}  # {comment}" if comment else f"  {command}"
                for command, comment in steps
            ),
            "",
        ]
    )


def main() -> None:
    slug = {{cookiecutter.project_slug | literal}}
    user = {{cookiecutter.db_user | literal}}
    password = {{cookiecutter.db_password | literal}} or make_password()
    host = {{cookiecutter.db_host | literal}}
    port = {{cookiecutter.db_port | literal}}
    database = {{cookiecutter.db_name | literal}}
    compose = {
        "POSTGRES_USER": user,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_DB": database,
        "POSTGRES_PORT": str(int(port)),
    }
    remove_unused_files(slug, {{cookiecutter.web_framework | literal}})
    write_env(Path(".env"), database_url(user, password, host, port, database), compose)
    forget_password(replay_file({{cookiecutter._repo_dir | literal}}))
    print(
        next_steps(
            slug,
            local_database=host in LOCAL_HOSTS,
            has_make=shutil.which("make") is not None,
            has_uv=shutil.which("uv") is not None,
        )
    )


if __name__ == "__main__":
    main()

"""Write the baked project's private `.env` and say what to do next (standard library only)."""

import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import quote

PASSWORD_BYTES = 24  # token_urlsafe(24) gives 32 characters, about 192 bits


def make_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def database_url(user: str, password: str, host: str, port: str, database: str) -> str:
    """Build the URL with every part percent-escaped, so `@ : / % # ?` in any part stay data."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal must be bracketed in a URL
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"postgresql+asyncpg://{credentials}@{host}:{int(port)}/{quote(database, safe='')}"


def write_env(path: Path, url: str) -> None:
    """Create `.env` readable by its owner only; single quotes keep dotenv from expanding it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as env:
        env.write("# Private: holds the database password. Never commit this file.\n")
        env.write(f"DATABASE_URL='{url}'\n")
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by umask, and ignored if the file exists


def next_steps(slug: str) -> str:
    install = (
        "uv sync"
        if shutil.which("uv")
        else ("python -m venv .venv && . .venv/bin/activate && pip install -e . --group dev")
    )
    return "\n".join(
        [
            "",
            f"Created {slug}/ with its connection string in {slug}/.env (mode 0600, git-ignored).",
            "Next steps:",
            f"  cd {slug}",
            f"  {install}",
            "  alembic upgrade head      # needs the PostgreSQL server named in .env",
            f"  python -m {slug}",
            "  pytest",
            "",
        ]
    )


def main() -> None:
    slug = {{cookiecutter.project_slug | tojson}}
    password = {{cookiecutter.db_password | tojson}} or make_password()
    url = database_url(
        user={{cookiecutter.db_user | tojson}},
        password=password,
        host={{cookiecutter.db_host | tojson}},
        port={{cookiecutter.db_port | string | tojson}},
        database={{cookiecutter.db_name | tojson}},
    )
    write_env(Path(".env"), url)
    print(next_steps(slug))


if __name__ == "__main__":
    main()

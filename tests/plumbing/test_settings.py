"""Settings: the URLs users really have, and a password that never shows."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.core.urls import connect_args, to_async_url
from {{ cookiecutter.project_slug }}.settings import Settings

from ..conftest import DEVELOPMENT_URL
from .servers import PROJECT_ROOT

PASSWORD = "p@ss:w/rd%41#?&=é 'q\"x"
PASSWORD_IN_URL = "s3cr3t-in-url"


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://u:pw@db.example.com:6543/app",
        "postgresql://u:pw@db.example.com:6543/app",
        "postgresql+asyncpg://u:pw@db.example.com:6543/app",
    ],
)
def test_every_postgresql_scheme_gets_the_asyncpg_driver(raw: str) -> None:
    """postgres://, postgresql:// and postgresql+asyncpg:// all mean asyncpg."""
    url = to_async_url(raw)
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+asyncpg",
        "db.example.com",
        6543,
        "app",
    )


@pytest.mark.parametrize(
    ("raw", "host", "port", "query"),
    [
        ("postgres://u:pw@a:5432,b:5433/app", None, None, {"host": "a,b", "port": "5432,5433"}),
        (
            "postgres://u:pw@/app?host=a:5432&host=b",
            None,
            None,
            {"host": "a,b", "port": "5432,5432"},
        ),
        ("postgres://u:pw@x:6000/app?host=a,b", None, None, {"host": "a,b", "port": "6000,6000"}),
        ("postgres://u:pw@/app?host=a,[::1]:7", None, None, {"host": "a,[::1]", "port": "5432,7"}),
        ("postgres://u:pw@x/app?port=6000", None, None, {"host": "x", "port": "6000"}),
        ("postgres://u:pw@/app?host=/run/postgresql", None, None, {"host": "/run/postgresql"}),
        ("postgres://u:pw@db:6000/app?sslmode=require", "db", 6000, {"sslmode": "require"}),
    ],
)
def test_the_url_keeps_libpqs_meaning_in_a_form_asyncpg_reads_alike(
    raw: str, host: str | None, port: int | None, query: dict[str, str]
) -> None:
    """Host lists (libpq's and SQLAlchemy's) become `?host=a,b&port=1,2`, every port filled
    in, which SQLAlchemy's URL accepts and asyncpg reads alike; `?host=`/`?port=` win over the
    URL's host and port, as in libpq (asyncpg would read the URL's first); the form parses
    again (tests and tools derive URLs from it)."""
    url = to_async_url(raw)
    assert (url.host, url.port, dict(url.query)) == (host, port, query)
    assert to_async_url(url.render_as_string(hide_password=False)) == url


def test_what_is_not_asyncpgs_to_read_stays_out_of_its_dsn() -> None:
    """connect_timeout and prepared_statement_cache_size become arguments, channel_binding
    goes, `ssl=` is spelled sslmode: asyncpg would send the others to the server as settings."""
    raw = (
        "postgres://u:pw@h/app?connect_timeout=7&prepared_statement_cache_size=0"
        "&channel_binding=prefer&ssl=require&application_name=web"
    )
    args = connect_args(raw)
    assert args == {
        "timeout": 7.0,
        "prepared_statement_cache_size": 0,
        "dsn": "postgresql://u:pw@h/app?application_name=web&sslmode=require",
    }
    assert connect_args("postgres://u:pw@h/app?connect_timeout=0")["timeout"] is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://u:pw@host/app", "scheme 'mysql'"),
        ("not a url", "not a URL"),
        ("postgres://u:pw@a:1,b:x/app", "port that is not a number"),
        ("postgresql://u:pw@localhost:99999/db", "port that is not a number"),
        ("postgresql://u:pw@localhost:0/db", "port that is not a number"),
        ("postgresql://u:pw@localhost:abc/db", "port that is not a number"),
        ("postgres://u:pw@host/app?port=99999", "port that is not a number"),
        ("postgres://u:pw@host/app?host=a:70000", "port that is not a number"),
        ("postgres://u:pw@host/app?sslmode=sometimes", "sslmode='sometimes'"),
        ("postgres://u:pw@host/app?hostaddr=10.0.0.1", "parameter 'hostaddr', which this"),
        ("postgres://u:pw@host/app?ssl_mode=require", "parameter 'ssl_mode'"),
        ("postgres://u:pw@host/app?statement_timeout=5s", "server setting goes in options="),
        ("postgres://u:pw@host/app?keepalives=1", "supported: application_name, channel_binding"),
        ("postgres://u:pw@host/app?channel_binding=require", "asyncpg cannot do channel binding"),
        ("postgres://u:pw@host/app?channel_binding=always", "channel_binding='always'"),
        ("postgres://u:pw@host/app?target_session_attrs=primarily", "target_session_attrs="),
        ("postgres://u:pw@host/app?sslnegotiation=fast", "sslnegotiation='fast'"),
        ("postgres://u:pw@host/app?ssl_min_protocol_version=TLSv2", "ssl_min_protocol_version="),
        ("postgres://u:pw@host/app?connect_timeout=soon", "connect_timeout='soon'"),
        ("postgres://u:pw@host/app?prepared_statement_cache_size=x", "use a whole number"),
        ("postgres://u:pw@host/app?prepared_statement_cache_size=-1", "use a whole number"),
        ("postgres://u:pw@host/app?sslmode=require&sslmode=disable", "'sslmode' more than once"),
        ("postgres://u:pw@host/app?ssl=require&sslmode=disable", "both ssl and sslmode"),
        ("postgres://u:pw@host/app?sslmode=require&sslrootcert=nowhere.pem", "does not exist"),
        ("postgres://u:pw@host/app?sslcrl=nowhere.crl", "sslcrl, and 'nowhere.crl' does not"),
        (
            "postgres://u:pw@host/app?sslmode=require&sslrootcert=system",
            "needs sslmode=verify-full",
        ),
        ("postgres://u:pw@a,b/app?port=1,2,3", "number of hosts and ports"),
    ],
)
def test_bad_urls_get_an_error_naming_the_variable(
    raw: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A URL this project cannot use is refused in one line naming DATABASE_URL and the
    parameter, never the password, when the settings load."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt to fall back on
    with pytest.raises(ValidationError, match="DATABASE_URL") as error:
        Settings.model_validate({"database_url": raw.replace("pw", PASSWORD_IN_URL)})
    assert message in str(error.value)
    assert PASSWORD_IN_URL not in str(error.value)


def test_a_bad_read_url_is_named_and_an_empty_one_is_unset() -> None:
    """DATABASE_READ_URL gets DATABASE_URL's checks, its errors naming it; empty is unset."""
    primary = "postgres://u:pw@primary/app"
    with pytest.raises(ValidationError, match="DATABASE_READ_URL has the parameter 'x'"):
        Settings.model_validate({"database_url": primary, "database_read_url": primary + "?x=1"})
    assert Settings.model_validate({"database_url": primary, "database_read_url": ""}) == (
        Settings.model_validate({"database_url": primary, "database_read_url": None})
    )


def test_python_m_names_an_unsupported_parameter_in_one_line() -> None:
    """`python -m <package>` with an unsupported URL parameter: one line, exit 2, no password."""
    raw = f"postgres://u:{PASSWORD_IN_URL}@localhost/app?sslmode=require&keepalives_idle=30"
    result = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.project_slug }}"],
        env={**os.environ, "DATABASE_URL": raw, "DATABASE_MIGRATION_URL": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "'keepalives_idle'" in result.stderr
    assert PASSWORD_IN_URL not in result.stderr


def test_the_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    """repr, str and the URL object mask the password; the URL still carries it."""
    url = URL.create("postgresql+asyncpg", "user", PASSWORD, "localhost", 5432, "app")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    settings = Settings()  # type: ignore[call-arg]
    for shown in (repr(settings), str(settings), repr(settings.database_url_object)):
        assert PASSWORD not in shown
    assert settings.database_url_object.password == PASSWORD


def test_the_environment_overrides_dot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL in the environment wins over the one in .env."""
    monkeypatch.setenv("DATABASE_URL", "postgres://someone:pw@elsewhere.example:6543/other")
    assert Settings().database_url_object.host == "elsewhere.example"  # type: ignore[call-arg]


def test_a_secret_comes_from_the_file_its_file_variable_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DATABASE_URL_FILE (Docker's secrets): the file's content, its last line break dropped,
    is DATABASE_URL; so for the migration and read URLs."""
    url = URL.create("postgresql+asyncpg", "user", PASSWORD, "db.internal", 5432, "app")
    for name in ("database_url", "database_migration_url", "database_read_url"):
        secret = tmp_path / name
        secret.write_text(url.render_as_string(hide_password=False) + "\n", encoding="utf-8")
        monkeypatch.setenv(f"{name.upper()}_FILE", str(secret))
        monkeypatch.delenv(name.upper(), raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in ("database_url", "database_migration_url", "database_read_url"):
        value = getattr(settings, name)
        assert value.get_secret_value() == url.render_as_string(hide_password=False)
    assert settings.database_url_object.password == PASSWORD
    assert PASSWORD not in repr(settings)


def test_a_secret_set_twice_or_unreadable_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DATABASE_URL and DATABASE_URL_FILE both set: refused, naming both (neither wins by
    accident); a file that cannot be read: refused, naming the variable and the file."""
    secret = tmp_path / "database_url"
    secret.write_text(f"postgres://u:{PASSWORD_IN_URL}@db/app", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    with pytest.raises(ValidationError, match="and DATABASE_URL_FILE are both set: keep one"):
        Settings.model_validate({"database_url": "postgres://u:pw@elsewhere/app"})
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert f"DATABASE_URL_FILE: cannot read {tmp_path / 'missing'}" in str(error.value)
    assert PASSWORD_IN_URL not in str(error.value)


async def test_a_hosting_provider_url_connects(engine: AsyncEngine) -> None:
    """A postgres:// URL with an sslmode, as providers hand them out, really connects."""
    raw = engine.url.set(drivername="postgres").render_as_string(hide_password=False)
    provider_engine = create_engine(Settings(database_url=SecretStr(f"{raw}?sslmode=disable")))
    try:
        async with provider_engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await provider_engine.dispose()


def test_settings_find_the_projects_env_from_any_directory() -> None:
    """Run from src/ (or anywhere), the settings still read the project's .env."""
    if not (PROJECT_ROOT / ".env").is_file():
        pytest.skip("this checkout has no .env (settings come from the environment)")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    result = subprocess.run(
        [
            *(sys.executable, "-c"),
            "from {{ cookiecutter.project_slug }}.settings import get_settings; "
            "print(get_settings().database_url_object.database)",
        ],
        cwd=PROJECT_ROOT / "src",
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == DEVELOPMENT_URL.database

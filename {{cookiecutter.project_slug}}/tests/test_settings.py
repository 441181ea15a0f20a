"""Settings: the URLs users really have, and a password that never shows."""

import pytest
from pydantic import ValidationError
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from {{ cookiecutter.project_slug }}.settings import Settings, to_async_url

PASSWORD = "p@ss:w/rd%41#?&=é 'q\"x"


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


def test_sslmode_becomes_asyncpgs_ssl_argument() -> None:
    """libpq's sslmode is translated to asyncpg's ssl argument."""
    url = to_async_url("postgres://u:pw@host/app?sslmode=verify-full")
    assert dict(url.query) == {"ssl": "verify-full"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://u:pw@host/app", "scheme 'mysql'"),
        ("not a url", "not a URL"),
        ("postgres://u:pw@host/app?sslmode=sometimes", "sslmode='sometimes'"),
    ],
)
def test_bad_urls_get_an_error_naming_the_variable(raw: str, message: str) -> None:
    """A URL this project cannot use is refused with DATABASE_URL named."""
    with pytest.raises(ValidationError, match="DATABASE_URL") as error:
        Settings.model_validate({"database_url": raw})
    assert message in str(error.value)


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


async def test_a_hosting_provider_url_connects(engine: AsyncEngine) -> None:
    """A postgres:// URL with an sslmode, as providers hand them out, really connects."""
    raw = engine.url.set(drivername="postgres").render_as_string(hide_password=False)
    provider_engine = create_async_engine(to_async_url(f"{raw}?sslmode=disable"))
    try:
        async with provider_engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await provider_engine.dispose()

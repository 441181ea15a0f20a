"""Fixtures: a real PostgreSQL server, and one baked, installed project to share."""

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .baking import add_plumbing_tests, bake, install, password_in_environment
from .postgres import Postgres, load_local_postgres, throwaway_server

# The plumbing's tests run inside bakes (baking.add_plumbing_tests), not here.
collect_ignore = ["plumbing"]


@pytest.fixture(scope="session", autouse=True)
def no_password_from_the_shell() -> Iterator[None]:
    """Bakes generate their password unless a test sets DATABASE_PASSWORD itself."""
    with password_in_environment(None):
        yield


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The server in DATABASE_URL (a superuser's), else a throwaway one stopped at the end."""
    local_postgres = load_local_postgres()
    bindir = local_postgres.find_bindir()
    if bindir is None:
        pytest.fail(local_postgres.INSTALL_HINT)
    if url := os.environ.get("DATABASE_URL"):
        parts = urlsplit(url)
        yield Postgres(
            parts.hostname or "localhost",
            parts.port or 5432,
            unquote(parts.username or "postgres"),
            unquote(parts.password or ""),
            bindir,
        )
        return
    password = secrets.token_urlsafe(16)
    with throwaway_server(bindir, password) as (server, _):
        yield Postgres("127.0.0.1", server.port, "postgres", password, bindir)


@pytest.fixture(scope="session")
def project(cookies_session: Any, postgres: Postgres) -> Path:
    """One project baked with the defaults (on the test server's port), with the plumbing's
    tests, installed."""
    baked = bake(cookies_session, postgres)
    add_plumbing_tests(baked)
    install(baked)
    return baked

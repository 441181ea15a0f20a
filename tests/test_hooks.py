"""The hooks' functions, and the slug filter, on their own."""

import ast
import keyword
import os
import stat
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hooks.post_gen_project import (
    compose_quote,
    database_url,
    given_password,
    make_password,
    next_steps,
    write_env,
    write_secrets,
)
from hooks.pre_gen_project import (
    RESERVED_SLUGS,
    host_problems,
    password_problems,
    problems,
    role_problems,
    slug_problems,
)
from local_extensions import identifier, literal, postgres_name

from .baking import TEMPLATE

# Standard-library modules that exist on Linux and macOS but not on Windows.
POSIX_ONLY = frozenset({"crypt", "fcntl", "grp", "pty", "pwd", "resource", "termios", "tty"})

VALID = {
    "name": "App",
    "slug": "app",
    "host": "localhost",
    "port": "5432",
    "user": "app",
    "database": "app",
}


@pytest.mark.parametrize("hook", sorted((TEMPLATE / "hooks").glob("*_project.py")), ids=str)
def test_hooks_import_only_what_every_system_has(hook: Path) -> None:
    """Hooks use the standard library only, and none of its POSIX-only modules."""
    imported = set()
    for node in ast.walk(ast.parse(hook.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) - POSIX_ONLY


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("slug", "Bad-Slug", "project_slug"),
        ("slug", "def", "project_slug"),
        ("slug", "json", "project_slug"),
        ("host", "a b", "db_host"),
        ("host", "a/b", "db_host"),
        ("host", "cafe:", "db_host"),
        ("port", "70000", "db_port"),
        ("port", "-1", "db_port"),
        ("user", "", "db_user"),
        ("user", "pg_app", "db_user"),
        ("user", "u" * 64, "db_user"),
        ("database", "  ", "db_name"),
        ("database", "pg_app", "db_name"),
        ("database", "é" * 32, "db_name"),
    ],
)
def test_each_problem_is_one_line_naming_the_field(field: str, value: str, named: str) -> None:
    """A bad answer gives exactly one line, which starts with the field's name."""
    found = problems(**{**VALID, field: value})
    assert len(found) == 1
    assert found[0].startswith(f"{named}: ")


def test_every_problem_is_reported_at_once() -> None:
    """Several bad answers give one line each, not just the first."""
    assert len(problems(name="", slug="X", host="", port="0", user="", database="")) == 6


def test_good_answers_have_no_problems() -> None:
    assert problems(**VALID) == []


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "db.internal.example.com",
        "db-1.eu-west-1.rds.amazonaws.com",
        "postgres_db",  # Docker Compose service names may hold `_`; Docker's DNS resolves them
        "a" * 63,
        ".".join(["a" * 63] * 3 + ["b" * 61]),  # 253 characters
        "127.0.0.1",
        "::1",
        "[::1]",
        "[2001:db8::1]",
        "::ffff:192.0.2.1",
    ],
)
def test_host_names_and_ip_literals_are_accepted(host: str) -> None:
    """Host names (RFC 1123 labels, plus `_`) and IPv4/IPv6 literals pass."""
    assert host_problems(host) == []


@pytest.mark.parametrize(
    "host",
    [
        ":",
        "cafe:",
        "-",
        "..",
        "[:]",
        "",
        "db.",
        "-db",
        "db-",
        "db..example",
        "a" * 64,
        ".".join(["a" * 63] * 3 + ["b" * 62]),  # 254 characters
        "[127.0.0.1]",
        "999.1.1.1",
        "12345",
        "fe80::1%eth0",
        "[::1",
        "bücher.example",
        "db:5432",
    ],
)
def test_other_hosts_are_refused_in_one_line(host: str) -> None:
    """Anything not a host name or IP literal: one line naming db_host."""
    found = host_problems(host)
    assert len(found) == 1
    assert found[0].startswith("db_host: ")


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("app", True),
        ("PG_app", True),  # PostgreSQL reserves the lowercase prefix only
        ("app_pg_", True),
        ("pg_app", False),
        ("a" * 63, True),
        ("a" * 64, False),
        ("é" * 31 + "x", True),  # 63 bytes in UTF-8
        ("é" * 32, False),  # 32 characters, 64 bytes
        ("🔑" * 15 + "abc", True),  # 63 bytes
        ("🔑" * 16, False),
    ],
)
def test_role_and_database_names_fit_postgres(name: str, accepted: bool) -> None:
    """A `pg_` prefix or more than 63 UTF-8 bytes is refused, for the user and the database."""
    for field in ("db_user", "db_name"):
        found = role_problems(field, name)
        assert (found == []) == accepted
        assert all(problem.startswith(f"{field}: ") for problem in found)


def test_a_password_that_is_not_utf8_is_refused_without_showing_it() -> None:
    """Bytes Python keeps as surrogates cannot go into .env: one line, the password not in it."""
    found = password_problems({"DATABASE_PASSWORD": "secret\udcff"})
    assert found == ["DATABASE_PASSWORD: is not valid UTF-8 text"]
    assert password_problems({"DATABASE_PASSWORD": "пароль 🔑"}) == []
    assert password_problems({}) == []


@pytest.mark.parametrize(
    ("environ", "given"),
    [
        ({"DATABASE_PASSWORD": "pa{{ 6*7 }}"}, "pa{{ 6*7 }}"),
        ({"DATABASE_PASSWORD": " spaced "}, " spaced "),
        ({"DATABASE_PASSWORD": ""}, None),
        ({}, None),
    ],
)
def test_the_password_is_taken_verbatim_from_the_environment(
    environ: dict[str, str], given: str | None
) -> None:
    """DATABASE_PASSWORD as set, unrendered and unstripped; unset or empty means generate."""
    assert given_password(environ) == given


@given(st.text(max_size=60))
def test_any_project_name_gives_an_accepted_slug(name: str) -> None:
    """Whatever the name, the derived slug passes the pre-gen check."""
    slug = identifier(name)
    assert slug_problems(slug) == []
    assert slug.isascii()
    assert not keyword.iskeyword(slug)
    assert slug not in RESERVED_SLUGS


@given(st.text(max_size=100))
def test_any_project_name_gives_accepted_default_names(name: str) -> None:
    """The default db_user and db_name, derived from the slug, pass the pre-gen check."""
    assert role_problems("db_user", postgres_name(identifier(name))) == []


@pytest.mark.parametrize(
    ("slug", "name"),
    [
        ("tutorial_service", "tutorial_service"),
        ("pg_admin", "admin"),
        ("pg_pg_admin", "admin"),
        ("pg_", "pg"),
        ("x" * 80, "x" * 59),  # 63 bytes with the app role's "_app"
    ],
)
def test_default_names_examples(slug: str, name: str) -> None:
    assert postgres_name(slug) == name


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Tutorial Service", "tutorial_service"),
        ("Café Ünïcode", "cafe_unicode"),
        ("2048 Game", "project_2048_game"),
        ("class", "class_project"),
        ("asyncio", "asyncio_project"),
        ("!!!", "project"),
    ],
)
def test_slug_examples(name: str, slug: str) -> None:
    assert identifier(name) == slug


@given(
    user=st.text(min_size=1, max_size=30),
    password=st.text(max_size=40),
    database=st.text(min_size=1, max_size=30),
)
def test_every_url_part_round_trips(user: str, password: str, database: str) -> None:
    """Any user, password and database name come back exactly after escaping."""
    url = urlsplit(database_url(user, password, "localhost", "5432", database))
    assert (unquote(url.username or ""), unquote(url.password or ""), unquote(url.path[1:])) == (
        user,
        password,
        database,
    )
    assert (url.hostname, url.port) == ("localhost", 5432)


def test_ipv6_hosts_are_bracketed() -> None:
    assert urlsplit(database_url("u", "p", "::1", "5432", "d")).hostname == "::1"
    assert "@[::1]:5432/" in database_url("u", "p", "::1", "5432", "d")


def test_generated_passwords_are_long_and_distinct() -> None:
    passwords = {make_password() for _ in range(100)}
    assert len(passwords) == 100
    assert min(map(len, passwords)) >= 24


# Windows has no permission bits: Python reports 0o666 for any file not marked read-only.
PRIVATE_MODE = 0o666 if os.name == "nt" else 0o600


def test_env_file_is_private_even_under_a_loose_umask(tmp_path: Path) -> None:
    """.env is created 0600, and an existing looser file is tightened."""
    env = tmp_path / ".env"
    env.write_text("old")
    env.chmod(0o644)
    app, owner = "postgresql+asyncpg://u_app:p@h:1/d", "postgresql+asyncpg://u:q@h:1/d"
    write_env(env, app, owner, {"POSTGRES_USER": "u"})
    assert stat.S_IMODE(env.stat().st_mode) == PRIVATE_MODE
    text = env.read_bytes().decode()  # bytes: the same LF line ends on every system
    assert f"DATABASE_URL='{app}'\n" in text
    assert f"DATABASE_MIGRATION_URL='{owner}'\n" in text
    assert 'POSTGRES_USER="u"\n' in text


@pytest.mark.skipif(os.name == "nt", reason="Windows has no permission bits")
def test_secrets_are_files_in_a_private_directory(tmp_path: Path) -> None:
    """Each secret is a file holding exactly its value; the directory is 0700, also when it
    existed looser, and the files readable inside the containers (0644)."""
    directory = tmp_path / ".secrets"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    write_secrets(directory, {"postgres_password": "pa ss\n'\"", "app_password": "x"})
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert (directory / "postgres_password").read_bytes() == b"pa ss\n'\""
    assert stat.S_IMODE((directory / "app_password").stat().st_mode) == 0o644


def test_db_user_leaves_room_for_the_app_roles_suffix() -> None:
    """db_user is refused 4 bytes short of PostgreSQL's limit, the message saying why."""
    assert role_problems("db_user", "u" * 59, room=4) == []
    [problem] = role_problems("db_user", "u" * 60, room=4)
    assert "'_app'" in problem


def test_env_file_is_written_without_os_fchmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows Python before 3.13 has no os.fchmod; .env is still written, and private."""
    monkeypatch.delattr(os, "fchmod", raising=False)
    env = tmp_path / ".env"
    write_env(env, "postgresql+asyncpg://u:p@h:1/d", "postgresql+asyncpg://o:q@h:1/d", {})
    assert stat.S_IMODE(env.stat().st_mode) == PRIVATE_MODE
    assert "DATABASE_URL=" in env.read_text(encoding="utf-8")


@given(st.text())
def test_literal_is_valid_python_and_toml_for_any_text(text: str) -> None:
    """The `literal` filter round-trips any text through Python and TOML, emoji included."""
    rendered = literal(text)
    assert ast.literal_eval(rendered) == text
    assert tomllib.loads(f"value = {rendered}")["value"] == text


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ("it's", '"it\'s"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("$HOME ${HOME}", '"\\$HOME \\${HOME}"'),
        ("ends with \\", '"ends with \\\\"'),
        ("# not a comment", '"# not a comment"'),
    ],
)
def test_compose_values_are_double_quoted_with_escapes(value: str, quoted: str) -> None:
    """Backslash, double quote and dollar are escaped, so compose reads the value back as is."""
    assert compose_quote(value) == quoted


@pytest.mark.parametrize(
    ("has_make", "has_uv", "windows", "install", "test"),
    [
        (True, True, False, "make install  # uv sync", "make test"),
        (True, False, False, "make install  # no uv found: python3 -m venv, then pip", "make test"),
        (False, True, False, "uv sync", "uv run pytest -n auto"),
        (
            False,
            False,
            False,
            "python3 -m venv .venv && .venv/bin/python -m pip",
            ".venv/bin/pytest -n auto",
        ),
        # Windows: no make (the Makefile needs a POSIX shell), the venv's Scripts\ folder.
        (True, True, True, "uv sync", "uv run pytest -n auto"),
        (
            True,
            False,
            True,
            "py -m venv .venv && .venv\\Scripts\\python -m pip",
            ".venv\\Scripts\\pytest -n auto",
        ),
    ],
)
def test_next_steps_fit_the_tools_found(
    has_make: bool, has_uv: bool, windows: bool, install: str, test: str
) -> None:
    """make targets where make is; otherwise the plain commands, with uv or pip, in the
    system's venv layout."""
    steps = next_steps(
        "app",
        local_database=True,
        password_given=False,
        has_make=has_make,
        has_uv=has_uv,
        windows=windows,
    )
    lines = steps.splitlines()
    assert lines[lines.index("  cd app") + 1].startswith(f"  {install}")
    assert ("make db" in steps) == (has_make and not windows)
    assert "alembic upgrade head" in steps
    assert any(line.startswith(f"  {test}") for line in lines)
    # Windows: Docker for the database (scripts/local_postgres.py says so there too).
    assert ("docker compose up -d --wait  #" in steps) == windows
    assert (".venv/bin" in steps) == (not windows and not has_make and not has_uv)


def test_next_steps_start_no_local_server_for_a_remote_database() -> None:
    """With a remote db_host, `make db` (a server on this machine) is left out."""
    steps = next_steps("app", local_database=False, password_given=True, has_make=True, has_uv=True)
    assert "make db" not in steps
    assert "make migrate" in steps


@pytest.mark.parametrize(
    ("local_database", "password_given", "warned"),
    [(True, False, False), (False, True, False), (False, False, True)],
)
def test_next_steps_say_how_to_use_an_existing_database(
    local_database: bool, password_given: bool, warned: bool
) -> None:
    """Replace DATABASE_URL in .env, or bake with DATABASE_PASSWORD; a warning when a remote
    server is given a password generated just now."""
    steps = " ".join(
        next_steps(
            "app",
            local_database=local_database,
            password_given=password_given,
            has_make=True,
            has_uv=True,
        ).split()
    )
    assert "DATABASE_MIGRATION_URL in app/.env with the URL your provider gives" in steps
    assert "DATABASE_PASSWORD=<its password>" in steps
    assert ("are new random ones" in steps) == warned

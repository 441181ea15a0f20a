"""Baking: which answers bake a valid project, which are refused, and what a bake contains."""

import json
import re
import stat
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from cookiecutter.exceptions import FailedHookException

from hooks.post_gen_project import WEB_FRAMEWORK_FILES

from .baking import TEMPLATE, files_holding, read_env

SUPPORTED: list[dict[str, str]] = [
    {},
    {"project_name": "Café Ünïcode — «Straße»"},
    {"project_name": "Quotes \" ' and \\ back{slash} {braces} $HOME `tick`"},
    {"project_name": "2048 Game"},
    {"project_name": "class"},
    {"project_name": "asyncio"},
    {"project_name": "!!!"},
    {"project_name": "PG Admin"},  # slug pg_admin; user and database default to admin
    {"project_name": "A Very Long Project Name " * 4},  # slug over 63 characters
    {"project_slug": "my_service"},
    {"db_user": "app-user with space", "db_name": "db-ünï code"},
    # 63 bytes, PostgreSQL's limit; the owner's name leaves room for the app role's "_app"
    {"db_user": "u" * 59, "db_name": "é" * 31 + "x"},
    {"db_user": "PG_app", "db_name": "app_pg_"},  # only a leading, lowercase pg_ is reserved
    {"db_host": "db.internal.example.com", "db_port": "6543"},
    {"db_host": "postgres_db"},  # a Docker Compose service name
    {"db_host": "127.0.0.1"},
    {"db_host": "::1"},
    {"db_host": "[2001:db8::1]"},
    {"web_framework": "fastapi"},
    {"web_framework": "fastapi", "project_slug": "my_service"},
]

UNSUPPORTED: list[dict[str, str]] = [
    {"project_slug": "My-Service"},
    {"project_slug": "1service"},
    {"project_slug": "import"},
    {"project_slug": "sqlalchemy"},
    {"project_slug": "café"},
    {"db_port": "0"},
    {"db_port": "65536"},
    {"db_port": "54x"},
    {"db_host": "db host"},
    {"db_host": "db/host"},
    {"db_host": ""},
    {"db_host": ":"},
    {"db_host": "cafe:"},
    {"db_host": "-"},
    {"db_host": ".."},
    {"db_host": "[:]"},
    {"db_host": "[127.0.0.1]"},
    {"db_host": "999.1.1.1"},
    {"db_host": "-db.example.com"},
    {"db_user": ""},
    {"db_user": "pg_app"},
    {"db_user": "u" * 60},  # 64 bytes as the app's role
    {"db_name": " "},
    {"db_name": "pg_app"},
    {"db_name": "é" * 32},  # 32 characters, 64 bytes
]

# Passwords as users have them: DATABASE_PASSWORD reaches .env verbatim, Jinja syntax included.
PASSWORDS = [
    "pa{{ 6*7 }}",
    "{% if x %}{# not a comment #}",
    "p@ss:w/rd%41#?&=é 'q\"x",
    "$HOME ${PATH} `id` \\n",
    "пароль 密码 🔑",
]

UNRENDERED = re.compile(r"\{\{\s*cookiecutter|\{%|%\}")


def ids(context: dict[str, str]) -> str:
    return ",".join(f"{key}={value!r}" for key, value in context.items()) or "defaults"


@pytest.mark.parametrize("context", SUPPORTED, ids=ids)
def test_bakes_a_valid_project(cookies: Any, context: dict[str, str]) -> None:
    """Every file renders fully, Python compiles, TOML parses, .env holds the exact answers:
    the app's URL with its own role, the migrations' with the owner, and .secrets/ private."""
    result = cookies.bake(extra_context=context)
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    answers = result.context

    assert project.name == answers["project_slug"]
    assert answers["project_slug"].isidentifier()
    assert (project / "src" / answers["project_slug"] / "core" / "database.py").is_file()
    for path in project.rglob("*"):
        if path.is_file() and path.suffix != ".mako":
            text = path.read_text(encoding="utf-8")
            assert not UNRENDERED.search(text), path
            if path.suffix == ".py":
                compile(text, str(path), "exec")  # raises SyntaxError on a broken render
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == answers["project_name"]
    recorded = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert recorded["cookiecutter"]["project_name"] == answers["project_name"]

    env_file = project / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = read_env(project)
    app, owner = urlsplit(env["DATABASE_URL"]), urlsplit(env["DATABASE_MIGRATION_URL"])
    assert unquote(app.username or "") == answers["db_user"] + "_app"
    assert unquote(owner.username or "") == answers["db_user"]
    assert app.password != owner.password
    for url in (app, owner):
        assert url.scheme == "postgresql+asyncpg"
        assert unquote(url.path[1:]) == answers["db_name"]
        assert url.port == int(answers["db_port"])
        assert url.hostname == answers["db_host"].strip("[]").lower()
        assert len(unquote(url.password or "")) >= 24  # generated: DATABASE_PASSWORD is unset
    assert "POSTGRES_PASSWORD" not in env  # compose reads it from .secrets/
    assert stat.S_IMODE((project / ".secrets").stat().st_mode) == 0o700


@pytest.mark.parametrize("web_framework", ["none", *WEB_FRAMEWORK_FILES])
def test_a_bake_holds_the_chosen_web_frameworks_files_only(
    cookies: Any, web_framework: str
) -> None:
    """Each framework's files and dependencies are in its bakes and in no other."""
    result = cookies.bake(extra_context={"web_framework": web_framework})
    project = Path(result.project_path)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    dependencies = " ".join(pyproject["project"]["dependencies"])
    for framework, paths in WEB_FRAMEWORK_FILES.items():
        chosen = framework == web_framework
        for path in paths:
            assert (project / path.format(slug=project.name)).exists() == chosen, path
        assert (framework in dependencies) == chosen


# The user's modules at the top of the package, by choice; everything else is in core/.
USERS_MODULES = {
    "none": {"__init__.py", "__main__.py", "settings.py", "models.py", "repository.py"},
    "fastapi": {"__init__.py", "__main__.py", "settings.py", "models.py", "repository.py"}
    | {"schemas.py", "routes.py", "web.py"},
}


@pytest.mark.parametrize("web_framework", ["none", "fastapi"])
def test_the_users_code_is_small_and_apart_from_the_machinery(
    cookies: Any, web_framework: str
) -> None:
    """The user's modules sit at the top of the package, small (800 lines at most with the
    web service, settings.py 150), the template's machinery in core/; settings.py has the web
    service's settings exactly when there is one."""
    result = cookies.bake(extra_context={"web_framework": web_framework})
    package = Path(result.project_path) / "src" / result.context["project_slug"]
    top = {path.name: path.read_text(encoding="utf-8") for path in package.glob("*.py")}
    assert set(top) == USERS_MODULES[web_framework]
    assert sum(text.count("\n") for text in top.values()) <= 800
    assert top["settings.py"].count("\n") <= 150
    assert ("request_timeout" in top["settings.py"]) == (web_framework == "fastapi")
    assert (package / "core" / "__init__.py").is_file()


@pytest.mark.parametrize(
    "path", json.loads((TEMPLATE / "cookiecutter.json").read_text())["_copy_without_render"]
)
def test_files_with_their_own_template_syntax_are_copied_unrendered(
    cookies: Any, path: str
) -> None:
    """Files in _copy_without_render (their own syntax is not Jinja's) arrive byte for byte."""
    result = cookies.bake()
    original = TEMPLATE / "{{cookiecutter.project_slug}}" / path
    assert (Path(result.project_path) / path).read_bytes() == original.read_bytes()


def test_generated_passwords_differ_between_bakes(
    cookies: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DATABASE_PASSWORD, or with it empty, every bake generates a new random one."""
    passwords = {
        urlsplit(read_env(Path(cookies.bake().project_path))[name]).password
        for _ in range(2)
        for name in ("DATABASE_URL", "DATABASE_MIGRATION_URL")
    }
    monkeypatch.setenv("DATABASE_PASSWORD", "")
    env = read_env(Path(cookies.bake().project_path))
    passwords |= {
        urlsplit(env[name]).password for name in ("DATABASE_URL", "DATABASE_MIGRATION_URL")
    }
    assert len(passwords) == 6


def test_the_password_is_no_longer_a_variable() -> None:
    """cookiecutter.json asks for no password, so no context, replay or answers file holds one."""
    variables = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    assert not [name for name in variables if "password" in name.lower()]


@pytest.mark.parametrize("password", PASSWORDS)
def test_the_password_comes_verbatim_from_the_environment(
    cookies: Any, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    """DATABASE_PASSWORD, the owner's, lands unrendered in .env's migration URL and in compose's
    secret file, and in no other file; the app's role gets a password of its own."""
    monkeypatch.setenv("DATABASE_PASSWORD", password)
    result = cookies.bake()
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    env = read_env(project)
    assert unquote(urlsplit(env["DATABASE_MIGRATION_URL"]).password or "") == password
    assert unquote(urlsplit(env["DATABASE_URL"]).password or "") != password
    assert (project / ".secrets" / "postgres_password").read_text(encoding="utf-8") == password
    holding = {path.relative_to(project).as_posix() for path in files_holding(project, password)}
    assert holding <= {".env", ".secrets/postgres_password", ".secrets/migration_url"}


@pytest.mark.parametrize("context", UNSUPPORTED, ids=ids)
def test_refuses_bad_answers(cookies: Any, tmp_path: Path, context: dict[str, str]) -> None:
    """A bad explicit answer fails the pre-gen hook and leaves no directory behind."""
    result = cookies.bake(extra_context=context)
    assert isinstance(result.exception, FailedHookException)
    assert result.project_path is None
    output_dirs = list((tmp_path / "cookies").iterdir())
    assert output_dirs
    assert not any(any(output.iterdir()) for output in output_dirs)

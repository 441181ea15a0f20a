"""The baked production image and compose stack, built and run on a real Docker engine.

Base images come from Debian packages (tests/docker_host.py), passed as the Dockerfile's and
compose.yaml's build arguments and image variables, as a user behind a registry mirror would.
Every request goes to 127.0.0.1; every wait is bounded.
"""

import http.client
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .baking import TEMPLATE_UV, UV_ENV, read_env, run
from .docker_host import (
    DOCKER_ENV,
    docker,
    docker_daemon,
    haproxy_base,
    install_docker,
    pgbouncer_base,
    postgres_base,
    python_base,
)
from .postgres import free_port

SLUG = "shipped_service"
IMAGE = "template-test-shipped-service:latest"
# This machine's HTTPS goes through a proxy whose CA is in the system bundle: the build's
# pip and uv need it, the final image must not hold it.
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
DEV_TOOLS = ["uv", "pytest", "ruff", "mypy", "gcc", "cc"]
# compose.yaml's default APP_REPLICAS.
APP_REPLICAS = 2


@pytest.fixture(scope="module")
def engine_running() -> Iterator[None]:
    """A Docker engine (installed and started here when missing), stopped afterwards."""
    if reason := install_docker():
        pytest.skip(reason)
    with docker_daemon() as reason:
        if reason:
            pytest.skip(reason)
        yield


@pytest.fixture(scope="module")
def shipped(engine_running: None, cookies_session: Any) -> Path:
    """The web service baked, locked (the Dockerfile installs uv.lock) and its image built."""
    result = cookies_session.bake(extra_context={"web_framework": "fastapi", "project_slug": SLUG})
    assert result.exception is None, result.exception
    project = Path(result.project_path)
    run(project, str(TEMPLATE_UV), "lock", "--quiet", **UV_ENV)
    build(project)
    return project


def build_arguments(project: Path) -> dict[str, str]:
    """The Dockerfile's build arguments here: Debian's Python, the proxy's CA for the build."""
    arguments = {"PYTHON_IMAGE": python_base()}
    if SYSTEM_CA.is_file():
        shutil.copy(SYSTEM_CA, project / "build-ca.pem")
        arguments["CA_BUNDLE"] = "build-ca.pem"
    return arguments


def build(project: Path) -> tuple[float, str]:
    """`docker build` of the project's image on Debian's Python: seconds taken, output."""
    arguments = [f"--build-arg={name}={value}" for name, value in build_arguments(project).items()]
    started = time.monotonic()
    output = docker("build", "-t", IMAGE, *arguments, str(project), timeout=900)
    return time.monotonic() - started, output


def steps(output: str) -> dict[str, str]:
    """The legacy builder's output by step: each step's instruction line and what followed."""
    chunks = output.split("\nStep ")[1:]
    return {chunk.split("\n", 1)[0]: chunk for chunk in chunks}


def test_a_code_change_reuses_the_dependency_layer(shipped: Path) -> None:
    """After a change to the code only, the dependencies' layer comes from the cache and the
    project's layer is rebuilt."""
    init = shipped / "src" / SLUG / "__init__.py"
    # Never built before (a layer of an earlier run would be reused): a new comment each time.
    init.write_text(f"{init.read_text()}# changed: {uuid.uuid4()}\n")
    seconds, output = build(shipped)
    by_step = steps(output)
    dependencies = [s for line, s in by_step.items() if "--no-install-project" in line]
    project = [s for line, s in by_step.items() if "--no-editable" in line]
    assert len(dependencies) == len(project) == 1, output
    assert "Using cache" in dependencies[0]
    assert "Using cache" not in project[0]
    print(f"\nrebuild after a code change: {seconds:.0f} s")


def in_image(*command: str, check: bool = True) -> str:
    return docker("run", "--rm", "--entrypoint", command[0], IMAGE, *command[1:], check=check)


def test_the_image_runs_as_a_user_without_dev_tools(shipped: Path) -> None:
    """Not root; no uv, pytest, ruff, mypy or compiler; no CA bundle or sources of the build;
    the migrations inside the installed package."""
    assert in_image("id", "-u").strip() == "10001"
    found = in_image("sh", "-c", f"for t in {' '.join(DEV_TOOLS)}; do command -v $t; done; :")
    assert found.strip() == ""
    assert "No module named 'pytest'" in in_image("python", "-c", "import pytest", check=False)
    assert in_image("sh", "-c", "ls /src /app/build-ca.pem 2>&1 || :").count("No such file") == 2
    ini = in_image("python", "-c", f"import {SLUG}.core.migrations as m; print(m.ALEMBIC_INI)")
    assert ini.strip().endswith(f"site-packages/{SLUG}/alembic.ini")
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE))
    print(f"\nimage size: {size / 1e6:.0f} MB")


class Stack:
    """The bake's compose.yaml, run by docker-compose with the test's images and ports: the
    app's replicas (APP_REPLICAS, 2) behind the proxy on APP_PORT."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.app_port = free_port()
        self.environment = {
            **DOCKER_ENV,
            # A name of this run's own: what an earlier, interrupted run left (containers, the
            # data volume) belongs to another project and cannot break `up` here.
            "COMPOSE_PROJECT_NAME": f"templatetest{os.getpid()}",
            "APP_IMAGE": IMAGE,
            "POSTGRES_IMAGE": postgres_base(),
            "PGBOUNCER_IMAGE": pgbouncer_base(),
            "PROXY_IMAGE": haproxy_base(),
            "POSTGRES_PORT": str(free_port()),
            "APP_PORT": str(self.app_port),
            # For `make deploy`'s `compose build`, as `build()` passes them.
            **build_arguments(project),
        }
        env = read_env(project)
        self.user, self.database = env["POSTGRES_USER"].strip('"'), env["POSTGRES_DB"].strip('"')

    def compose(self, *arguments: str, check: bool = True, timeout: float = 300) -> str:
        result = subprocess.run(
            ["docker-compose", *arguments],
            cwd=self.project,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        if check and result.returncode != 0:
            logs = subprocess.run(
                ["docker-compose", "logs", "--no-color"],
                cwd=self.project,
                env=self.environment,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            pytest.fail(f"docker-compose {' '.join(arguments)}: {output}\n{logs[-3000:]}")
        return output

    def containers(self, service: str) -> list[str]:
        """The service's running containers (one per replica)."""
        listed = self.compose("ps", "-q", service).split()
        running = docker("ps", "-q", "--no-trunc", "--filter", "status=running")
        return [container for container in listed if container in running.split()]

    def wait_healthy(self, service: str) -> None:
        """Until the healthcheck of every container of the service passes (for the app: all
        APP_REPLICAS of them, and the proxy answers on its port): two minutes at most."""
        expected = APP_REPLICAS if service == "app" else 1
        for _ in range(240):
            containers = self.containers(service)
            states = [
                docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False)
                for container in containers
            ]
            healthy = len(containers) >= expected and all(s.strip() == "healthy" for s in states)
            if healthy and (service != "app" or self.request("GET", "/ready")[0] == 200):
                return
            time.sleep(0.5)
        pytest.fail(f"{service} is not healthy: {self.compose('logs', '--no-color', service)}")

    def in_container(self, container: str, code: str) -> str:
        """Python `code` run in the app's `container`: what it printed."""
        return docker("exec", container, "python", "-c", code, timeout=60).strip()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """`method path` on the app, published on 127.0.0.1: the status and the JSON body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.app_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None  # not answering (yet): the proxy is starting

    def sql(self, statement: str) -> str:
        """`statement` through psql in the db container."""
        return self.compose(
            *("exec", "-T", "db", "psql", "-X", "-A", "-t", "-U", self.user, "-d", self.database),
            *("-c", statement),
        ).strip()


@pytest.fixture(scope="module")
def stack(shipped: Path) -> Iterator[Stack]:
    """`docker-compose up -d`: db, then migrate, then app, healthy; removed with its volume."""
    stack = Stack(shipped)
    try:
        # Nothing of an earlier run under this name (a reused process id): a clean start.
        stack.compose("--profile", "pgbouncer", "down", "-v", "--remove-orphans", check=False)
        stack.compose("up", "-d")
        stack.wait_healthy("app")
        yield stack
    finally:
        stack.compose("--profile", "pgbouncer", "down", "-v", "--remove-orphans", check=False)


def test_the_stack_serves_and_keeps_its_data(stack: Stack) -> None:
    """A tutorial written through the service reads back, also after the app restarted; the
    migration ran once, and run again it has nothing to do."""
    status, created = stack.request("POST", "/tutorials", {"name": "shipped"})
    assert status == 201
    path = f"/tutorials/{created['tutorial_id']}"
    assert stack.request("GET", path) == (200, created)
    assert "upgraded an empty database to head" in stack.compose("logs", "--no-color", "migrate")
    stack.compose("restart", "app")
    stack.wait_healthy("app")
    assert stack.request("GET", path) == (200, created)
    again = stack.compose("run", "--rm", "migrate")
    assert "nothing to do" in again
    # The app's pooled connections, by the name they carry.
    names = "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname IS NOT NULL"
    assert SLUG in stack.sql(names).split()


def test_no_password_shows_and_the_app_holds_rows_only(stack: Stack) -> None:
    """Neither password is in `docker inspect` of the app's or the migration's containers, nor
    in `docker-compose config`; the app is connected as the app's role, which may not create a
    table, on a read-only filesystem."""
    secrets = stack.project / ".secrets"
    passwords = [(secrets / name).read_text() for name in ("postgres_password", "app_password")]
    containers = stack.compose("ps", "-a", "-q", "app", "migrate").split()
    shown = [docker("inspect", *containers), stack.compose("config")]
    assert [p for p in passwords for text in shown if p in text] == []
    roles = f"SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = '{SLUG}'"
    assert stack.sql(roles).split() == [f"{stack.user}_app"]
    create = "from {0}.core.database import get_engine; import asyncio, sqlalchemy as s\n"
    create += "async def main():\n async with get_engine().begin() as c:\n"
    create += "  await c.execute(s.text('CREATE TABLE intruder (x int)'))\n"
    create += "try: asyncio.run(main())\nexcept Exception as e: print(str(e).splitlines()[0])"
    container = stack.containers("app")[0]
    assert "permission denied for schema public" in stack.in_container(
        container, create.format(SLUG)
    )
    write = "open('/written', 'w')"
    refused = docker("exec", container, "python", "-c", write, check=False)
    assert "Read-only file system" in refused


# Python run in a replica: a request to the replica itself, its status printed.
TO_THE_REPLICA = """
import json, urllib.error, urllib.request as r
body = {body!r}
request = r.Request("http://127.0.0.1:8000{path}", method="{method}",
    data=None if body is None else json.dumps(body).encode(),
    headers={{"Content-Type": "application/json"}})
try:
    print(r.urlopen(request, timeout=30).status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_sigterm_during_a_slow_request(stack: Stack) -> None:
    """SIGTERM to a replica while a request to it waits on a lock: its /ready answers 503,
    the proxy stops sending it requests within the drain (5 s), and the request completes."""
    replica = stack.containers("app")[0]

    def on_replica(method: str, path: str, body: Any = None) -> int:
        code = TO_THE_REPLICA.format(method=method, path=path, body=body)
        return int(stack.in_container(replica, code))

    lock = "BEGIN; LOCK TABLE tutorials IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;"
    holder = threading.Thread(target=stack.sql, args=(lock,))
    holder.start()
    time.sleep(1)
    answers: list[int] = []
    slow = threading.Thread(
        target=lambda: answers.append(on_replica("POST", "/tutorials", {"name": "in flight"}))
    )
    slow.start()
    time.sleep(1)
    docker("kill", "--signal", "TERM", replica)
    signalled = time.monotonic()
    time.sleep(0.5)
    ready = on_replica("GET", "/ready")
    # Out of the proxy's rotation once /ready through it answers 200 four times in a row
    # (round robin: the draining replica's 503 would be among them).
    in_a_row = 0
    while in_a_row < 4 and time.monotonic() - signalled < 10:
        in_a_row = in_a_row + 1 if stack.request("GET", "/ready")[0] == 200 else 0
        time.sleep(0.1)
    out_of_rotation = time.monotonic() - signalled
    slow.join(timeout=30)
    holder.join(timeout=30)
    print(f"\nSIGTERM to a replica: out of the proxy's rotation after {out_of_rotation:.1f} s")
    assert ready == 503
    assert out_of_rotation < 5  # SHUTDOWN_DRAIN_SECONDS: it still serves until then
    assert answers == [201]
    assert stack.sql("SELECT count(*) FROM tutorials WHERE name = 'in flight'") == "1"
    # Both replicas again for the next tests: once the signalled one has exited (`docker
    # kill` counts as a stop, so no restart policy brings it back), `up` starts it again.
    docker("wait", replica, timeout=60)
    stack.compose("up", "-d", "--no-recreate")
    stack.wait_healthy("app")


def test_metrics_stay_inside_the_stack_and_head_is_answered(stack: Stack) -> None:
    """The published port has no /metrics, and answers HEAD with no body; the metrics port
    answers inside the app's container network, where a scraper would reach it."""
    assert stack.request("GET", "/metrics")[0] == 404
    head = urllib.request.Request(f"http://127.0.0.1:{stack.app_port}/health", method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as response:
        assert (response.status, response.read()) == (200, b"")
    scrape = "import urllib.request as r; print(r.urlopen('http://127.0.0.1:9464/metrics').read())"
    assert "http_requests_total" in stack.compose("exec", "-T", "app", "python", "-c", scrape)


# A release under load: clients, each a request every LOAD_INTERVAL s, half of them writing.
LOAD_CLIENTS = 16
LOAD_INTERVAL = 0.1
LOAD_SECONDS = 60
REQUEST_TIMEOUT = 10
SEED_ROWS = 200_000
# What a team ships: a nullable column, and an index built without blocking writes.
RELEASE_MIGRATION = """\"\"\"A release that only adds: a column, an index on the names.\"\"\"

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tutorials", sa.Column("summary", sa.String(255), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_tutorials_name",
            "tutorials",
            ["name"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_tutorials_name", postgresql_concurrently=True, if_exists=True)
    op.drop_column("tutorials", "summary")
"""


class SteadyLoad:
    """`clients` threads, each on a keep-alive connection to the proxy on 127.0.0.1 sending a
    request every LOAD_INTERVAL s (even ones POST /tutorials, odd ones GET /tutorials/{id} of
    `read_ids`), each bounded by REQUEST_TIMEOUT, until `stop()` or `limit` seconds."""

    def __init__(self, port: int, clients: int, read_ids: range, limit: float) -> None:
        self.port, self.read_ids = port, read_ids
        self.deadline = time.monotonic() + limit
        self.requests = 0
        self.successes: list[float] = []  # when each successful answer came
        self.failures: list[str] = []
        self.acknowledged: list[int] = []  # every id a 201 returned
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self.client, args=(number, clients))
            for number in range(clients)
        ]
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def client(self, number: int, clients: int) -> None:
        writes = number % 2 == 0
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        due = time.monotonic() + LOAD_INTERVAL * number / clients  # spread over an interval
        sent = 0
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            time.sleep(max(0.0, due - time.monotonic()))
            if writes:
                method, path = "POST", "/tutorials"
                body: bytes | None = json.dumps({"name": f"load {number}-{sent}"}).encode()
            else:
                method, path, body = "GET", f"/tutorials/{random.choice(self.read_ids)}", None
            try:
                connection.request(method, path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                succeeded = response.status == (201 if writes else 200)
                outcome = f"{method} {path}: {response.status} {payload[:300]!r}"
            except (OSError, http.client.HTTPException) as error:
                connection.close()  # the next request opens a new connection
                succeeded, outcome = False, f"{method} {path}: {error!r}"
            with self.lock:
                self.requests += 1
                if succeeded:
                    self.successes.append(time.monotonic())
                    if writes:
                        self.acknowledged.append(json.loads(payload)["tutorial_id"])
                else:
                    self.failures.append(f"{time.monotonic() - self.started:.1f} s: {outcome}")
            sent += 1
            due = max(due + LOAD_INTERVAL, time.monotonic())
        connection.close()

    def stop(self) -> float:
        """Stop the clients; the seconds they ran."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        return time.monotonic() - self.started

    def longest_gap(self) -> float:
        """The longest time between two successful answers (from the first to the last)."""
        times = sorted(self.successes)
        return max((later - earlier for earlier, later in itertools.pairwise(times)), default=0.0)


def head_revision(project: Path) -> str:
    """The migrations' head: the revision no other revision revises."""
    revisions, revised = set(), set()
    for path in (project / "alembic" / "versions").glob("*.py"):
        text = path.read_text()
        revisions.update(re.findall(r'^revision[^=]*= "(\w+)"', text, re.MULTILINE))
        revised.update(re.findall(r'^down_revision[^=]*= "(\w+)"', text, re.MULTILINE))
    (head,) = revisions - revised
    return head


def deploy(stack: Stack, **environment: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`make deploy` in the project, as a user runs it: its result, and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        ["make", "deploy"],
        cwd=stack.project,
        env={**stack.environment, **environment},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result, time.monotonic() - started


def image_of(container: str) -> str:
    return docker("inspect", "-f", "{{.Image}}", container).strip()


def image_of_tag(tag: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", tag).strip()


def test_a_release_under_load(stack: Stack) -> None:
    """`make deploy` ships a new image with a new migration (a nullable column, an index
    built concurrently on 200,000 rows) while 16 clients write and read through the proxy for
    a minute: no request fails, every acknowledged write is there, and no second passes
    without a successful answer."""
    stack.sql(
        "INSERT INTO tutorials (name) SELECT 'seed ' || g"
        f" FROM generate_series(1, {SEED_ROWS}) AS g"
    )
    first, last = map(
        int, stack.sql("SELECT min(tutorial_id), max(tutorial_id) FROM tutorials").split("|")
    )
    revision = uuid.uuid4().hex[:12]
    down_revision = head_revision(stack.project)
    migration = stack.project / "alembic" / "versions" / f"2026_12_01_0000-{revision}_release.py"
    migration.write_text(RELEASE_MIGRATION.format(revision=revision, down_revision=down_revision))
    old = set(stack.containers("app"))

    load = SteadyLoad(stack.app_port, LOAD_CLIENTS, range(first, last + 1), limit=5 * LOAD_SECONDS)
    time.sleep(5)  # steady before the release starts
    result, deploy_seconds = deploy(stack)
    time.sleep(max(5.0, LOAD_SECONDS - (time.monotonic() - load.started)))
    load_seconds = load.stop()

    stored = stack.sql("SELECT tutorial_id FROM tutorials WHERE name LIKE 'load %'").split()
    missing = set(load.acknowledged) - {int(tutorial_id) for tutorial_id in stored}
    steps = [line for line in result.stdout.splitlines() if line.startswith("deploy:")]
    print(
        f"\nrelease under load: {load.requests} requests in {load_seconds:.0f} s from"
        f" {LOAD_CLIENTS} clients, {len(load.failures)} failed; writes: {len(load.acknowledged)}"
        f" acknowledged, {len(missing)} missing; longest gap without a success:"
        f" {load.longest_gap():.2f} s; make deploy: {deploy_seconds:.0f} s\n" + "\n".join(steps)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert load.failures == [], load.failures[:20]
    assert missing == set()
    assert load.longest_gap() <= 1.0
    new = set(stack.containers("app"))
    assert len(new) == APP_REPLICAS
    assert not new & old
    assert {image_of(container) for container in new} == {image_of_tag(IMAGE)}
    assert stack.sql("SELECT version_num FROM alembic_version") == revision
    assert (
        stack.sql(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_tutorials_name'::regclass"
        )
        == "t"
    )


def test_a_release_that_never_gets_ready(stack: Stack) -> None:
    """A new image whose replica never answers /ready with 200: `make deploy` stops it after
    DEPLOY_READY_TIMEOUT, gives the image's tag back to the previous build and exits non-zero;
    the old replicas serve throughout."""
    dockerfile = stack.project / "Dockerfile"
    good = dockerfile.read_text()
    old = set(stack.containers("app"))
    good_image = image_of_tag(IMAGE)
    first, last = map(
        int, stack.sql("SELECT min(tutorial_id), max(tutorial_id) FROM tutorials").split("|")
    )
    # It serves, but /ready gives up at once: the proxy must never send it a request.
    dockerfile.write_text(f"{good}ENV READY_TIMEOUT=0\n")
    try:
        load = SteadyLoad(stack.app_port, 4, range(first, last + 1), limit=300)
        result, deploy_seconds = deploy(stack, DEPLOY_READY_TIMEOUT="10")
        load_seconds = load.stop()
        tagged = image_of_tag(IMAGE)
    finally:
        dockerfile.write_text(good)
        docker("tag", good_image, IMAGE)  # for the tests after this one, whatever happened
    output = result.stdout + result.stderr
    steps = [line for line in output.splitlines() if line.startswith("deploy:")]
    print(
        f"\na release that never gets ready: make deploy exited {result.returncode} after"
        f" {deploy_seconds:.0f} s; meanwhile {load.requests} requests in {load_seconds:.0f} s,"
        f" {len(load.failures)} failed\n" + "\n".join(steps)
    )
    assert result.returncode != 0, output[-3000:]
    assert "not ready within 10 s" in output
    assert load.failures == [], load.failures[:20]
    # The new replica stopped and removed; the old ones as they were.
    assert set(stack.compose("ps", "-q", "app").split()) == old
    assert tagged == good_image


def test_the_app_through_pgbouncer(stack: Stack) -> None:
    """The pgbouncer profile, the app pointed at it in transaction mode: it writes and reads;
    with PgBouncer stopped /ready answers 503, so its traffic really goes through it."""
    stack.environment |= {
        "DATABASE_URL_SECRET": "pgbouncer_database_url",
        "DATABASE_PGBOUNCER": "true",
    }
    stack.compose("--profile", "pgbouncer", "up", "-d")
    stack.wait_healthy("pgbouncer")
    stack.wait_healthy("app")
    status, created = stack.request("POST", "/tutorials", {"name": "pooled"})
    assert status == 201
    assert stack.request("GET", f"/tutorials/{created['tutorial_id']}") == (200, created)
    stack.compose("--profile", "pgbouncer", "stop", "pgbouncer")
    assert stack.request("GET", "/ready")[0] == 503

"""The baked production image and compose stack, built and run on a real Docker engine.

Base images come from Debian packages (tests/docker_host.py), passed as the Dockerfile's and
compose.yaml's build arguments and image variables, as a user behind a registry mirror would.
Every request goes to 127.0.0.1; every wait is bounded.
"""

import json
import os
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


def test_the_app_through_pgbouncer(stack: Stack) -> None:
    """The pgbouncer profile, the app pointed at it in transaction mode: it writes and reads;
    with PgBouncer stopped /ready answers 503, so its traffic really goes through it."""
    direct = read_env(stack.project)["COMPOSE_DATABASE_URL"].strip('"')
    stack.environment |= {
        "COMPOSE_DATABASE_URL": direct.replace("@db:5432/", "@pgbouncer:5432/"),
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

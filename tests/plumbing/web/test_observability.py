"""What an operator sees of the service in a real uvicorn: JSON log lines with request ids,
database errors with their SQLSTATE and no secret, and Prometheus metrics (served by `serve`
on a port of their own: see test_hostile_clients.py)."""

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.core.observability import metrics_app
from {{ cookiecutter.project_slug }}.core.web import SessionDep
from {{ cookiecutter.project_slug }}.settings import Settings
from {{ cookiecutter.project_slug }}.web import create_app

from ..captured_logs import captured_logs
from ..conftest import settings_for
from ..servers import PROJECT_ROOT, free_port
from .test_web_server import serving, settled

PACKAGE = "{{ cookiecutter.project_slug }}"


def json_settings(**overrides: Any) -> Settings:
    return Settings(log_format="json", **overrides)


async def scrape() -> dict[str, float]:
    """The metrics listener's /metrics, parsed by prometheus-client's parser:
    `name{labels}` -> value."""
    transport = httpx.ASGITransport(app=metrics_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(name: str, **labels: str) -> str:
    return name + json.dumps(labels, sort_keys=True)


@pytest.mark.commits
async def test_log_lines_carry_request_ids_sqlstates_and_no_secret(
    bind_get_session: Callable[..., AsyncEngine],
) -> None:
    """Every line is JSON; a request's lines, the data layer's included, carry the id the
    client sent, or a generated one; the id comes back in X-Request-ID; an access line per
    request has method, route, status and duration; a database error's line has its SQLSTATE;
    no line holds the password, the URL or a statement's parameters."""
    # Every statement is "slow": the data layer writes a line inside each request.
    bind_get_session(settings_for(database.get_engine().url, database_slow_statement_ms=0.001))
    settings = json_settings()
    app = create_app(settings)

    @app.get("/divide-by-zero")
    async def divide_by_zero(session: SessionDep) -> None:
        await session.execute(text("SELECT 1 / 0"))

    name = "a name that is a statement parameter"
    with captured_logs(settings) as logs:
        async with (
            serving(app, log_config=logs.config) as base_url,
            httpx.AsyncClient(base_url=base_url) as client,
        ):
            given = {"X-Request-ID": "client-id-42"}
            created = await client.post("/tutorials", json={"name": name}, headers=given)
            read = await client.get(created.headers["Location"])
            insane = await client.get("/health", headers={"X-Request-ID": "x" * 129})
            failed = await client.get("/divide-by-zero", headers={"X-Request-ID": "fails-1"})
    assert created.headers["X-Request-ID"] == "client-id-42"
    assert re.fullmatch("[0-9a-f]{32}", generated := read.headers["X-Request-ID"])
    assert re.fullmatch("[0-9a-f]{32}", insane.headers["X-Request-ID"])
    assert failed.status_code == 500
    lines = logs.lines()
    access = {line["request_id"]: line for line in lines if line["logger"] == f"{PACKAGE}.access"}
    assert access["client-id-42"] | {"duration_ms": 0} == access["client-id-42"] | {
        "method": "POST",
        "route": "/tutorials",
        "status": 201,
        "duration_ms": 0,
    }
    assert access[generated]["route"] == "/tutorials/{tutorial_id}"
    assert access[generated]["duration_ms"] > 0
    statements = [line for line in lines if "slow statement" in line["message"]]
    assert {"client-id-42", generated} <= {line.get("request_id") for line in statements}
    (error,) = [line for line in lines if line.get("sqlstate")]
    assert (error["sqlstate"], error["request_id"], error["level"]) == (
        "22012",
        "fails-1",
        "ERROR",  # a 500: a bug, worth an alert
    )
    url = database.get_engine().url
    everything = logs.text()
    for secret in (url.password, url.render_as_string(hide_password=False), name):
        assert str(secret) not in everything


async def test_uvicorn_run_as_documented_logs_json_lines() -> None:
    """`uvicorn <package>.web:app` with LOG_FORMAT=json: uvicorn's own lines and the access
    lines are JSON, each request's with its id."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", f"{PACKAGE}.web:app", "--port", str(port)),
        cwd=PROJECT_ROOT,
        env={**os.environ, "LOG_FORMAT": "json"},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(300):
                try:
                    answer = await client.get("/health", headers={"X-Request-ID": "probe-7"})
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert answer.status_code == 200
    finally:
        process.terminate()
        _, stderr = await process.communicate()
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    messages = [line["message"] for line in lines]
    assert "Application startup complete." in messages
    assert "GET /health 200" in " ".join(messages)
    (access,) = [line for line in lines if line["logger"] == f"{PACKAGE}.access"]
    assert (access["request_id"], access["status"]) == ("probe-7", 200)


@pytest.mark.commits
@pytest.mark.logs_errors  # the 500s
async def test_metrics_parse_and_the_pool_gauge_follows_held_connections(
    engine: AsyncEngine,
) -> None:
    """/metrics parses as Prometheus text: requests by route template and status, a latency
    histogram, database errors by SQLSTATE class, and the pool's checked-out connections,
    which rise while requests wait on a lock and fall back after; HEAD counts as HEAD, and any
    path no route has as `unmatched`, never as itself."""
    app = create_app(json_settings())

    @app.get("/divide-by-zero")
    async def divide_by_zero(session: SessionDep) -> None:
        await session.execute(text("SELECT 1 / 0"))

    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        before = await scrape()
        async with engine.connect() as blocker:
            await blocker.execute(text("LOCK TABLE tutorials IN ACCESS EXCLUSIVE MODE"))
            waiting = [
                asyncio.create_task(client.post("/tutorials", json={"name": f"held {n}"}))
                for n in range(5)
            ]
            for _ in range(100):
                during = await scrape()
                if during[sample("database_pool_checked_out")] >= 5:
                    break
                await asyncio.sleep(0.05)
            await blocker.rollback()
        assert [(await task).status_code for task in waiting] == [201] * 5
        assert (await client.get("/divide-by-zero")).status_code == 500
        assert (await client.head("/health")).status_code == 200
        assert (await client.get("/no/such/path/42")).status_code == 404
        await settled(engine)
        after = await scrape()
    assert during[sample("database_pool_checked_out")] >= 5
    assert after[sample("database_pool_checked_out")] == 0
    assert after[sample("database_pool_size")] == database.get_engine().pool.size()  # type: ignore[attr-defined]
    created = sample("http_requests_total", method="POST", route="/tutorials", status="201")
    assert after[created] - before.get(created, 0) == 5
    latency = sample("http_request_duration_seconds_count", method="POST", route="/tutorials")
    assert after[latency] - before.get(latency, 0) == 5
    errors = sample("database_errors_total", sqlstate_class="22")
    assert after[errors] - before.get(errors, 0) == 1
    head = sample("http_requests_total", method="HEAD", route="/health", status="200")
    unmatched = sample("http_requests_total", method="GET", route="unmatched", status="404")
    assert after[head] - before.get(head, 0) == after[unmatched] - before.get(unmatched, 0) == 1
    assert not [name for name in after if "/no/such/path" in name]


async def test_metrics_can_be_turned_off(engine: AsyncEngine) -> None:
    """METRICS_ENABLED=false: requests are not counted; the app never serves /metrics (404),
    whatever the setting."""
    counted = sample("http_requests_total", method="GET", route="/health", status="200")
    for enabled in (False, True):
        app = create_app(json_settings(metrics_enabled=enabled))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            before = (await scrape()).get(counted, 0)
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/metrics")).status_code == 404
            assert (await scrape()).get(counted, 0) - before == enabled

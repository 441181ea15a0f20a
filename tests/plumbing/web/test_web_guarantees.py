"""The HTTP service through ASGI: routes, validation, errors, and when its sessions commit."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.web import create_app

from ...server_state import count_tutorials
from ..conftest import fail_inserts, idle_in_transaction, settings_for
from ..test_replicas import Pair, pair, replayed, route  # noqa: F401  (fixtures: pair, route)
from ..test_resilience import SilentProxy


@pytest.mark.usefixtures("unreachable_database")
async def test_health_asks_no_database(client: AsyncClient) -> None:
    """/health answers 200 while the database is unreachable."""
    assert (await client.get("/health")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"name": NaN}', "name"),
        (b'{"name": -Infinity}', "name"),
        (b'{"name": "\\ud800"}', "name"),
        (b'{"\\udfff": 1, "name": "ok"}', "body"),
        (b'{"name": "' + b"x" * 500_000 + b'"}', "name"),
        (b'{"name": ["' + b"y" * 1000 + b'"] }', "name"),
        (b'{"name": "unterminated', "body"),
    ],
    ids=["NaN", "-Infinity", "lone surrogate", "surrogate key", "500 kB", "list", "not JSON"],
)
async def test_every_invalid_body_is_a_short_422_naming_the_field(
    client: AsyncClient, content: bytes, field: str
) -> None:
    """Values JSON cannot carry back, huge ones and broken JSON: a 422 naming the field and
    its problem, with at most a short excerpt of the value."""
    response = await client.post(
        "/tutorials", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert len(response.content) < 1000
    error = response.json()["detail"][0]
    assert field in [str(part) for part in error["loc"]]
    assert error["msg"]
    assert error["type"]


async def test_a_body_that_is_not_utf8_is_a_documented_400(client: AsyncClient) -> None:
    """JSON must be UTF-8: anything else is a 400, which the OpenAPI document lists."""
    response = await client.post(
        "/tutorials", content=b'{"name": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    responses = (await client.get("/openapi.json")).json()["paths"]["/tutorials"]["post"]
    assert "400" in responses["responses"]


async def over_the_limit(size: int) -> AsyncIterator[bytes]:
    """A chunked body of `size` bytes (no Content-Length to go by)."""
    for _ in range(size // 65536 + 1):
        yield b"x" * 65536


@pytest.mark.parametrize(
    "content",
    [b"x" * (1024 * 1024 + 1), over_the_limit(1024 * 1024 + 1)],
    ids=["declared length", "chunked"],
)
async def test_a_body_over_the_limit_is_413(
    client: AsyncClient, session: AsyncSession, content: bytes | AsyncIterator[bytes]
) -> None:
    """A body over REQUEST_MAX_BYTES (1 MiB) is refused with 413, whether its length is
    declared or it arrives in chunks; nothing is stored."""
    response = await client.post(
        "/tutorials", content=content, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (
        413,
        {"detail": "request body over 1048576 bytes"},
    )
    assert await count_tutorials(session, "") == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/tutorials", "GET, HEAD, POST"),
        ("PATCH", "/tutorials/1", "DELETE, GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
    ],
)
async def test_a_method_not_allowed_names_every_allowed_one(
    client: AsyncClient, method: str, path: str, allow: str
) -> None:
    """405's `Allow` lists the methods of every route on the path, not only the first's."""
    response = await client.request(method, path)
    assert (response.status_code, response.headers["allow"]) == (405, allow)


async def test_head_is_answered_wherever_get_is(client: AsyncClient) -> None:
    """HEAD answers as GET would, without the body."""
    get, head = await client.get("/health"), await client.head("/health")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == get.headers["content-length"]


@pytest.mark.commits
async def test_ready_after_the_pool_sat_idle(
    engine: AsyncEngine,
    client: AsyncClient,
    bind_get_session: Callable[..., AsyncEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pooled connection idle past DATABASE_POOL_PING_IDLE is pinged and kept: /ready and a
    write answer as usual, and nothing is logged (asyncpg 0.32 once failed every ping: 500)."""
    bind_get_session(settings_for(engine.url, database_pool_ping_idle=0.2), pool_size=2)
    assert (await client.get("/ready")).status_code == 200
    await asyncio.sleep(0.3)
    with caplog.at_level(logging.INFO):
        assert (await client.get("/ready")).status_code == 200
        assert (await client.post("/tutorials", json={"name": "after idling"})).status_code == 201
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# How a handler fails after its write: the route, and the answer it gets.
FAILED_AFTER_A_WRITE = {
    "a bug: a JSON 500 without a traceback": ("/write-then-raise", 500, "internal error"),
    "HTTPException: its own answer": ("/write-then-refuse", 409, "refused after the write"),
    "an OSError not from the database: a 500, not a 503": (
        "/write-then-fail-on-a-file",
        500,
        "internal error",
    ),
    "a swallowed failed statement: a 500, not a 2xx for lost rows": (
        "/write-then-swallow",
        500,
        "internal error",
    ),
}


@pytest.mark.parametrize(
    ("path", "status", "detail"), FAILED_AFTER_A_WRITE.values(), ids=FAILED_AFTER_A_WRITE.keys()
)
@pytest.mark.logs_errors  # the 500s
async def test_a_handler_failing_after_a_write_stores_nothing(
    client: AsyncClient, session: AsyncSession, path: str, status: int, detail: str
) -> None:
    """A handler that writes, then fails however it fails: its answer, and the write rolled
    back."""
    response = await client.post(path)
    assert (response.status_code, response.json()) == (status, {"detail": detail})
    assert await count_tutorials(session, "written, then ") == 0


@pytest.mark.commits
async def test_the_lifespan_disposes_the_engine(engine: AsyncEngine) -> None:
    """Leaving the lifespan closes every pooled connection: none is dropped at exit."""
    app = create_app()
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/ready")).status_code == 200
        assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]


@pytest.mark.usefixtures("unreachable_database")
async def test_an_unreachable_database_is_503(client: AsyncClient) -> None:
    """No database: /ready and the routes answer 503 JSON, naming no host or password."""
    password = database.get_engine().url.password or ""
    for method, path in [("GET", "/ready"), ("POST", "/tutorials"), ("GET", "/tutorials/1")]:
        response = await client.request(method, path, json={"name": "unstored"})
        assert response.status_code == 503, (method, path)
        assert "database unavailable" in response.json()["detail"]
        assert password not in response.text
        assert "127.0.0.1" not in response.text


@pytest.mark.commits
async def test_a_server_out_of_connection_slots_is_503(
    own_server: tuple[Any, URL], client: AsyncClient, bind_get_session: Callable[..., AsyncEngine]
) -> None:
    """ "Too many connections" (SQLSTATE 53300; here a role allowed none) answers 503 with
    Retry-After: the client should come back, not give up."""
    _, url = own_server
    admin = database.create_engine(settings_for(url), poolclass=NullPool)
    async with admin.begin() as connection:
        await connection.execute(text("DROP ROLE IF EXISTS limited"))
        await connection.execute(text("CREATE ROLE limited LOGIN PASSWORD 'x' CONNECTION LIMIT 0"))
    await admin.dispose()
    bind_get_session(settings_for(url.set(username="limited", password="x")))
    response = await client.post("/tutorials", json={"name": "no slot"})
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")


@pytest.mark.commits
async def test_ready_is_503_when_the_database_does_not_answer_in_time(
    engine: AsyncEngine, client: AsyncClient, bind_get_session: Callable[..., AsyncEngine]
) -> None:
    """The connection to the database goes silent: /ready answers 503 after READY_TIMEOUT (2 s),
    never hangs; /health still answers 200."""
    proxy = SilentProxy(engine.url)
    bind_get_session(settings_for(await proxy.start()), pool_size=1, max_overflow=0)
    try:
        assert (await client.get("/ready")).status_code == 200
        proxy.vanish()
        started = asyncio.get_running_loop().time()
        assert (await client.get("/ready")).status_code == 503
        assert asyncio.get_running_loop().time() - started < 10
        assert (await client.get("/health")).status_code == 200
    finally:
        await proxy.stop()


@pytest.fixture
async def failing_commit(owner_engine: AsyncEngine) -> AsyncIterator[str]:
    """A name whose row makes COMMIT fail (a deferred constraint trigger); removed after."""
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.name = 'fails at commit' THEN"
                " RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON tutorials"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"
            )
        )
    try:
        yield "fails at commit"
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER refuse_at_commit ON tutorials"))
            await connection.execute(text("DROP FUNCTION refuse_at_commit()"))


@pytest.mark.commits
@pytest.mark.logs_errors  # the 500s
async def test_a_failing_commit_is_a_5xx_and_stores_nothing(
    client: AsyncClient, engine: AsyncEngine, failing_commit: str
) -> None:
    """The COMMIT fails after the handler returned: the client gets a 500, never a 201."""
    response = await client.post("/tutorials", json={"name": failing_commit})
    assert (response.status_code, response.json()) == (500, {"detail": "internal error"})
    assert await count_tutorials(engine, failing_commit) == 0
    assert (await client.post("/tutorials", json={"name": "fine"})).status_code == 201
    assert await count_tutorials(engine, "fine") == 1


@pytest.mark.commits
async def test_get_routes_read_on_the_standby(
    pair: Pair,  # noqa: F811  (the fixture)
    route: Callable[..., None],  # noqa: F811
    client: AsyncClient,
) -> None:
    """POST writes on the primary; once the standby replayed it, GET routes read it there."""
    route(pair.url, pair.standby_url)
    created = await client.post("/tutorials", json={"name": "replicated"})
    assert created.status_code == 201
    await replayed(pair)
    assert (await client.get(created.headers["location"])).json() == created.json()
    assert (await client.get("/tutorials")).status_code == 200
    assert database.read_engine is not None
    assert database.read_engine.pool.checkedin() == 1  # type: ignore[attr-defined]  # QueuePool


@pytest.mark.commits
async def test_a_write_on_a_read_only_server_is_503(
    pair: Pair,  # noqa: F811  (the fixture)
    route: Callable[..., None],  # noqa: F811
    client: AsyncClient,
) -> None:
    """A write that reaches a read-only server (a demoted primary) answers 503 with
    Retry-After, never 500."""
    route(pair.standby_url)  # as DATABASE_URL: what a failover leaves behind a stale name
    response = await client.post("/tutorials", json={"name": "refused"})
    assert (response.status_code, response.headers.get("retry-after")) == (503, "1")


@pytest.mark.logs_errors  # the 500s
async def test_a_write_in_a_get_routes_read_session_is_500(client: AsyncClient) -> None:
    """A GET route that writes is a bug, not an outage: 500 (never 503 "retry"), nothing kept."""
    assert (await client.get("/write-in-a-read-session")).status_code == 500
    async with database.get_session() as session:
        assert await count_tutorials(session, "written in a read session") == 0


# A failure a trigger raises on INSERT, by its condition name, and the answer it must get.
FAILURES = {
    "disk full (53100)": ("disk_full", 503),
    "out of memory (53200)": ("out_of_memory", 503),
    "too many connections (53300)": ("too_many_connections", 503),
    "the server's statement_timeout (57014)": ("query_canceled", 503),
    "lock_timeout (55P03)": ("lock_not_available", 503),
    "serialization failure (40001)": ("serialization_failure", 503),
    "deadlock (40P01)": ("deadlock_detected", 503),
    "the server shutting down (57P01)": ("admin_shutdown", 503),
    "a check constraint (23514): a conflict": ("check_violation", 409),
    "division by zero (22012): a bug": ("division_by_zero", 500),
}


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        pytest.param(*failure, marks=[pytest.mark.logs_errors] if failure[1] == 500 else [])
        for failure in FAILURES.values()
    ],
    ids=FAILURES.keys(),
)
@pytest.mark.parametrize(
    "path", ["/tutorials", "/tutorials-in-a-session"], ids=["execute()", "get_session()"]
)
async def test_each_database_failure_gets_its_status(
    client: AsyncClient, session: AsyncSession, condition: str, status: int, path: str
) -> None:
    """What a retry may outlast is a 503 with Retry-After; a conflict a 409; a bug a 500: the
    same for the service's one-statement POST as for a route's session."""
    await fail_inserts(session, condition)
    response = await client.post(path, json={"name": "fails"})
    assert response.status_code == status
    assert response.headers.get("retry-after") == ("1" if status == 503 else None)


@pytest.mark.logs_errors  # the 500s
async def test_a_failing_read_is_a_500_as_in_a_read_session(
    client: AsyncClient, session: AsyncSession
) -> None:
    """A read that fails as a bug would (a column gone): 500 for the one-statement GET as for
    the list, whose read session runs the ORM."""
    await session.execute(text("ALTER TABLE tutorials RENAME COLUMN name TO title"))
    assert (await client.get("/tutorials/1")).status_code == 500
    assert (await client.get("/tutorials")).status_code == 500


@pytest.mark.commits
async def test_a_request_cancelled_mid_statement_leaves_no_connection_behind(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    """A request whose task is cancelled while its INSERT waits on a lock (a server that
    cancels on disconnect, a timeout around the app): no row, no connection checked out or in
    a transaction, and the next request is served."""
    async with engine.connect() as blocker:
        await blocker.execute(text("LOCK TABLE tutorials IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post("/tutorials", json={"name": "cancelled"}), 0.5)
        await blocker.rollback()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await idle_in_transaction(engine) == 0
    assert await count_tutorials(engine, "cancelled") == 0
    assert (await client.post("/tutorials", json={"name": "next"})).status_code == 201


async def test_a_body_of_too_many_json_values_is_413_unparsed(client: AsyncClient) -> None:
    """More values than REQUEST_MAX_JSON_VALUES (1,000, counted by their separators) is a
    413 before anything parses it; a body just under the limit is validated as usual."""
    keys = ",".join(f'"k{n}": 0' for n in range(499))  # 998 separators, the name's 1 more
    json = {"content-type": "application/json"}
    under = await client.post("/tutorials", content='{"name": "x", ' + keys + "}", headers=json)
    over = '{"name": "x", ' + keys + ', "k": 0}'
    refused = await client.post("/tutorials", content=over, headers=json)
    assert under.status_code == 422  # the unknown fields
    assert (refused.status_code, refused.json()) == (
        413,
        {"detail": "request body over 1000 JSON values"},
    )

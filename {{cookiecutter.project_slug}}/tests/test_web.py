"""The HTTP service through ASGI: its routes, their validation, and the 404/409 answers."""

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from {{ cookiecutter.project_slug }}.web import create_app

from .server_state import count_tutorials

ROUTES = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/tutorials"),
    ("GET", "/tutorials"),
    ("GET", "/tutorials/{tutorial_id}"),
    ("DELETE", "/tutorials/{tutorial_id}"),
}


@pytest.fixture(scope="module")
async def app(engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    """The app from the factory, its lifespan running (one per module)."""
    app = create_app()
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """An HTTP client calling the app in-process; app errors come back as responses."""
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_health(client: AsyncClient) -> None:
    """/health answers 200 without asking the database."""
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_ready_when_the_database_answers(client: AsyncClient) -> None:
    """/ready answers 200 when SELECT 1 succeeds."""
    response = await client.get("/ready")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_create_then_read(client: AsyncClient) -> None:
    """POST answers 201 with the tutorial and its Location, where GET finds it."""
    created = await client.post("/tutorials", json={"name": "Hello"})
    assert created.status_code == 201
    body = created.json()
    assert body == {"tutorial_id": body["tutorial_id"], "name": "Hello"}
    assert created.headers["location"] == f"/tutorials/{body['tutorial_id']}"
    read = await client.get(created.headers["location"])
    assert (read.status_code, read.json()) == (200, body)


async def test_missing_tutorial_is_404(client: AsyncClient) -> None:
    """GET and DELETE of an absent id answer 404 with a JSON detail."""
    for method in ("GET", "DELETE"):
        response = await client.request(method, "/tutorials/123456")
        assert (response.status_code, response.json()) == (404, {"detail": "no such tutorial"})


async def test_delete(client: AsyncClient) -> None:
    """DELETE answers 204 and the tutorial is gone; a second DELETE is 404."""
    location = (await client.post("/tutorials", json={"name": "short-lived"})).headers["location"]
    deleted = await client.delete(location)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await client.get(location)).status_code == 404
    assert (await client.delete(location)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 256},
        {"name": "nul \x00 inside"},
        {"name": 42},
        {},
        {"name": "ok", "extra": 1},
    ],
    ids=["empty", "256 chars", "NUL", "not a string", "no name", "unknown field"],
)
async def test_invalid_bodies_are_422(
    client: AsyncClient, session: AsyncSession, body: object
) -> None:
    """Names the column cannot store are refused by validation (422), never by the database."""
    response = await client.post("/tutorials", json=body)
    assert response.status_code == 422
    assert await count_tutorials(session, "") == 0


async def test_longest_name_is_accepted(client: AsyncClient) -> None:
    """255 characters, the column's length, are stored (multi-byte characters count as one)."""
    name = "é" * 255
    response = await client.post("/tutorials", json={"name": name})
    assert (response.status_code, response.json()["name"]) == (201, name)


@pytest.mark.parametrize("path", ["/tutorials/0", "/tutorials/2147483648", "/tutorials/x"])
async def test_ids_out_of_range_are_422(client: AsyncClient, path: str) -> None:
    """An id the integer column cannot hold is a 422, not a database error."""
    assert (await client.get(path)).status_code == 422


async def test_pagination_is_stable_under_deletes(client: AsyncClient) -> None:
    """Pages come oldest first; deleting a row already seen skips and repeats nothing."""
    ids = [
        (await client.post("/tutorials", json={"name": f"page {n}"})).json()["tutorial_id"]
        for n in range(5)
    ]
    first = (await client.get("/tutorials", params={"limit": 2})).json()
    assert [item["tutorial_id"] for item in first["items"]] == ids[:2]
    await client.delete(f"/tutorials/{ids[0]}")
    second = (
        await client.get("/tutorials", params={"limit": 2, "after": first["next_after"]})
    ).json()
    assert [item["tutorial_id"] for item in second["items"]] == ids[2:4]
    last = (
        await client.get("/tutorials", params={"limit": 2, "after": second["next_after"]})
    ).json()
    assert ([item["tutorial_id"] for item in last["items"]], last["next_after"]) == (ids[4:], None)


@pytest.mark.parametrize("limit", [0, 101, -1])
async def test_page_size_is_bounded(client: AsyncClient, limit: int) -> None:
    """A limit outside 1..100 is a 422."""
    assert (await client.get("/tutorials", params={"limit": limit})).status_code == 422


async def test_openapi_lists_the_routes(client: AsyncClient) -> None:
    """The OpenAPI document describes every route of the service."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    listed = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert listed >= ROUTES


async def test_requests_run_in_the_tests_transaction(
    client: AsyncClient, session: AsyncSession, engine: AsyncEngine
) -> None:
    """What a request stores is visible to the test, and to nobody else: it is rolled back."""
    await client.post("/tutorials", json={"name": "isolated request"})
    assert await count_tutorials(session, "isolated request") == 1
    assert await count_tutorials(engine, "isolated request") == 0


async def test_unique_violation_is_409(client: AsyncClient, session: AsyncSession) -> None:
    """A unique violation answers 409 without the statement, its parameters or the row."""
    await session.execute(text("CREATE UNIQUE INDEX tutorials_name_unique ON tutorials (name)"))
    assert (await client.post("/tutorials", json={"name": "secret-ish"})).status_code == 201
    response = await client.post("/tutorials", json={"name": "secret-ish"})
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "conflicts with stored data"},
    )

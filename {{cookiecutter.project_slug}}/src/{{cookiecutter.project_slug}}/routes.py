"""The service's routes: each a function on `router`, which the app includes (web.py).

A route takes `SessionDep` to write (committed before the response is sent, rolled back if
the route raises) or `ReadSessionDep` to read (read-only, on the replica if there is one);
a route whose whole work is one statement calls a repository function built on `execute()`
or `execute_read()` instead, and takes neither: one round trip.
"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import delete, select

from .core.web import Problem, ReadSessionDep, SessionDep, check_ready
from .models import Tutorial
from .repository import find_tutorial, insert_tutorial
from .schemas import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    TutorialCreate,
    TutorialId,
    TutorialPage,
    TutorialRead,
)
from .settings import get_settings

router = APIRouter()
# One tutorial's path: its GET route's, and the Location a POST answers with (formatted here:
# router.url_path_for() tries every route in turn, raising for each that is not it).
TUTORIAL_PATH = "/tutorials/{tutorial_id}"


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (asks no database): for liveness probes."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"model": Problem}})
async def ready() -> dict[str, str]:
    """The database answers within READY_TIMEOUT and takes writes: for readiness probes."""
    await check_ready(get_settings())
    return {"status": "ready"}


@router.post(
    "/tutorials",
    status_code=status.HTTP_201_CREATED,
    response_model=TutorialRead,
    responses={
        400: {"model": Problem, "description": "The body is not JSON in UTF-8"},
        409: {"model": Problem},
        413: {"model": Problem, "description": "The body is over REQUEST_MAX_BYTES"},
    },
)
async def create_tutorial(body: TutorialCreate, response: Response) -> TutorialRead:
    tutorial_id = await insert_tutorial(body.name)
    response.headers["Location"] = TUTORIAL_PATH.format(tutorial_id=tutorial_id)
    return TutorialRead(tutorial_id=tutorial_id, name=body.name)


@router.get(
    TUTORIAL_PATH,
    response_model=TutorialRead,
    responses={404: {"model": Problem}},
)
async def read_tutorial(tutorial_id: TutorialId) -> TutorialRead:
    row = await find_tutorial(tutorial_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tutorial")
    return TutorialRead(tutorial_id=row.tutorial_id, name=row.name)


@router.get("/tutorials", response_model=TutorialPage)
async def list_tutorials(
    session: ReadSessionDep,
    after: Annotated[TutorialId | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> TutorialPage:
    """Keyset pagination on the primary key: a page stays correct while rows are added or
    deleted before it, and page 1,000 costs an index range scan like page 1."""
    query = select(Tutorial).order_by(Tutorial.tutorial_id).limit(limit + 1)
    if after is not None:
        query = query.where(Tutorial.tutorial_id > after)
    rows = list(await session.scalars(query))
    items = [TutorialRead.model_validate(row) for row in rows[:limit]]
    more = len(rows) > limit
    return TutorialPage(items=items, next_after=items[-1].tutorial_id if more else None)


@router.delete(
    TUTORIAL_PATH,
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": Problem}},
)
async def delete_tutorial(tutorial_id: TutorialId, session: SessionDep) -> None:
    deleted = await session.scalar(
        delete(Tutorial).where(Tutorial.tutorial_id == tutorial_id).returning(Tutorial.tutorial_id)
    )
    if deleted is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such tutorial")

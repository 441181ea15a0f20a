"""The web service's request and response bodies."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# models.Tutorial.name is String(255): longer names are refused here, as a 422, before the
# database would refuse them. NUL is the one character PostgreSQL text cannot store.
TutorialName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00]*$")]
# Tutorial.tutorial_id is a PostgreSQL integer: a larger id in a URL is a 422, not a 500.
TutorialId = Annotated[int, Field(ge=1, le=2**31 - 1)]
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class TutorialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TutorialName


class TutorialRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    tutorial_id: int
    name: str


class TutorialPage(BaseModel):
    """One page, oldest first; pass `next_after` as `after` for the next (null: last page)."""

    items: list[TutorialRead]
    next_after: int | None

"""`python -m <package>`: save a tutorial, then print every stored one."""

import asyncio
import sys
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from .core.database import dispose, get_session
from .core.logs import configure_logging
from .repository import list_tutorials, save_tutorial
from .settings import get_settings, invalid_settings


async def main() -> None:
    try:
        async with get_session() as session:
            await save_tutorial(session, f"Tutorial saved at {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
        async with get_session() as session:
            for tutorial in await list_tutorials(session):
                print(f"{tutorial.tutorial_id}\t{tutorial.name}")
    finally:
        await dispose()


def run() -> int:
    try:
        url = get_settings().database_url_object
    except ValidationError as error:
        print(invalid_settings(error), file=sys.stderr)
        return 2
    configure_logging(get_settings())
    try:
        asyncio.run(main())
    except (DBAPIError, OSError) as error:
        # The URL's repr masks the password; the driver's own message never contains it.
        reason = error.orig if isinstance(error, DBAPIError) else error
        print(f"error: cannot use the database {url!r}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())

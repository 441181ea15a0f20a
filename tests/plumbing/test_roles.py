"""Two roles: the migrations' owns the schema; the app's (DATABASE_URL's) reads and writes
rows, of the tables of every later migration too, and can change nothing else."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core.migrations import MissingAppRoleError, upgrade

from ..conftest import DEVELOPMENT_URL
from .test_deploy import migrate_command, raw
from .test_migration_lock import current_revisions, head, table_names, with_a_revision

APP_ROLE = DEVELOPMENT_URL.username or ""

# A later revision as users write them: a table, and no GRANT of its own.
A_NEW_TABLE = '''"""add notes"""

import sqlalchemy as sa
from alembic import op

revision = "a0de5a11e000"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("note_id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notes")
'''


@pytest.fixture
async def as_the_app(empty_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The app's role on `empty_engine`'s database."""
    engine = create_async_engine(
        DEVELOPMENT_URL.set(database=empty_engine.url.database), poolclass=NullPool
    )
    yield engine
    await engine.dispose()


async def test_the_app_role_writes_rows_and_changes_nothing_else(
    empty_engine: AsyncEngine, as_the_app: AsyncEngine
) -> None:
    """Migrated with the app's role: it inserts, reads, updates and deletes tutorials; CREATE,
    ALTER, DROP and TRUNCATE are refused."""
    assert empty_engine.url.username != APP_ROLE  # .env has two roles
    await upgrade(empty_engine, app_role=APP_ROLE)
    async with as_the_app.begin() as connection:
        await connection.execute(text("INSERT INTO tutorials (name) VALUES ('kept')"))
        await connection.execute(text("UPDATE tutorials SET name = 'changed'"))
        assert await connection.scalar(text("SELECT name FROM tutorials")) == "changed"
        await connection.execute(text("DELETE FROM tutorials"))
    for statement in (
        "CREATE TABLE intruder (x int)",
        "ALTER TABLE tutorials ADD COLUMN intruder int",
        "DROP TABLE tutorials",
        "TRUNCATE tutorials",
        "DELETE FROM alembic_version",
    ):
        async with as_the_app.connect() as connection:
            with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                await connection.execute(text(statement))


async def test_a_later_migrations_table_is_the_app_roles_without_a_grant(
    empty_engine: AsyncEngine,
    as_the_app: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A revision that creates a table and grants nothing: the app's role writes its rows (the
    owner's default privileges), and its identity's sequence."""
    await upgrade(empty_engine, app_role=APP_ROLE)
    with_a_revision(tmp_path, monkeypatch, "a0de5a11e000_add_notes.py", A_NEW_TABLE)
    await upgrade(empty_engine, app_role=APP_ROLE)
    async with as_the_app.begin() as connection:
        await connection.execute(text("INSERT INTO notes (body) VALUES ('written')"))
        assert await connection.scalar(text("SELECT body FROM notes")) == "written"


async def test_a_missing_app_role_is_named_and_the_migration_rolled_back(
    empty_engine: AsyncEngine,
) -> None:
    """An app role that does not exist: the error names it, and the database is as before (no
    table half made, no revision recorded)."""
    with pytest.raises(MissingAppRoleError, match="'no_such_app_role' does not exist"):
        await upgrade(empty_engine, app_role="no_such_app_role")
    assert await table_names(empty_engine) == set()


async def test_the_migrate_command_names_a_missing_app_role(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    """The deploy step with DATABASE_URL's role missing: exit 1, one line naming the role and
    how to fix it, no password; then, the role's URL fixed, it migrates."""
    missing = empty_engine.url.set(username="no_such_app_role", password="s3cret-app")
    code, output = await migrate_command(
        tmp_path, DATABASE_URL=raw(missing), DATABASE_MIGRATION_URL=raw(empty_engine.url)
    )
    assert code == 1
    assert output.count("\n") == 1
    assert "'no_such_app_role' does not exist: create it" in output
    assert "s3cret-app" not in output
    assert str(empty_engine.url.password) not in output
    app = DEVELOPMENT_URL.set(database=empty_engine.url.database)
    code, output = await migrate_command(
        tmp_path, DATABASE_URL=raw(app), DATABASE_MIGRATION_URL=raw(empty_engine.url)
    )
    assert code == 0, output
    assert len(await current_revisions(empty_engine)) == 1


async def test_the_migrate_command_reads_both_urls_from_files(
    empty_engine: AsyncEngine, tmp_path: Path
) -> None:
    """As compose and Kubernetes run it: DATABASE_URL_FILE and DATABASE_MIGRATION_URL_FILE
    only, the URLs in files; it migrates as the owner and grants the app's role its rows."""
    app = DEVELOPMENT_URL.set(database=empty_engine.url.database)
    (tmp_path / "app").write_text(raw(app) + "\n")
    (tmp_path / "owner").write_text(raw(empty_engine.url))
    code, output = await migrate_command(
        tmp_path,
        DATABASE_URL="",
        DATABASE_MIGRATION_URL="",
        DATABASE_URL_FILE=str(tmp_path / "app"),
        DATABASE_MIGRATION_URL_FILE=str(tmp_path / "owner"),
    )
    assert code == 0, output
    assert str(app.password) not in output
    assert len(await current_revisions(empty_engine)) == 1


async def test_at_head_the_migrate_command_grants_a_role_that_lacks_its_rows(
    empty_engine: AsyncEngine, as_the_app: AsyncEngine, tmp_path: Path
) -> None:
    """A database migrated with one role, then given two: at head, the deploy step grants the
    app's role its rows (once: then it has nothing to do), and names a role that is missing."""
    await upgrade(empty_engine)  # one role: nothing granted
    owner = raw(empty_engine.url)
    missing = raw(empty_engine.url.set(username="no_such_app_role", password="s3cret-app"))
    code, output = await migrate_command(
        tmp_path, DATABASE_URL=missing, DATABASE_MIGRATION_URL=owner
    )
    assert (code, output.count("\n")) == (1, 1)
    assert "'no_such_app_role' does not exist" in output
    app = raw(DEVELOPMENT_URL.set(database=empty_engine.url.database))
    code, output = await migrate_command(tmp_path, DATABASE_URL=app, DATABASE_MIGRATION_URL=owner)
    assert (code, output) == (0, f"already at head ({head()}): granted {APP_ROLE!r} rows\n")
    async with as_the_app.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM tutorials")) == 0
    code, output = await migrate_command(tmp_path, DATABASE_URL=app, DATABASE_MIGRATION_URL=owner)
    assert (code, output) == (0, f"already at head ({head()}): nothing to do\n")

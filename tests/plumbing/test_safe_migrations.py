"""Migrations that cannot stall the service: squawk on each revision's own SQL (the lint of
`make lint`, pre-commit and CI), autogenerate's concurrent indexes, and the migrations' own
statement timeout, on a real server."""

import asyncio
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core import migrations
from {{ cookiecutter.project_slug }}.core.connections import sqlstate
from {{ cookiecutter.project_slug }}.core.migrations import alembic_config, migrate, upgrade
from {{ cookiecutter.project_slug }}.models import Base

from .conftest import settings_for
from .test_migration_lock import current_revisions, head, with_a_revision

# A revision after the project's head (with_a_revision fills in down_revision).
REVISION = '''"""a release"""
<ACCEPT>
import sqlalchemy as sa
from alembic import op

revision = "5afe00000001"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    <UPGRADE>


def downgrade() -> None:
    pass
'''
# Revisions that stall a running service, by the squawk rule that names them.
HAZARDS = {
    "require-concurrent-index-creation": 'op.create_index("ix_names", "tutorials", ["name"])',
    "changing-column-type": 'op.alter_column("tutorials", "name", type_=sa.Text())',
    "adding-field-with-default": (
        'op.add_column("tutorials", sa.Column("seen", sa.DateTime(timezone=True),'
        ' server_default=sa.text("clock_timestamp()")))'
    ),
    "adding-required-field": (
        'op.add_column("tutorials", sa.Column("kind", sa.Text(), nullable=False))'
    ),
    "adding-not-nullable-field": 'op.alter_column("tutorials", "name", nullable=False)',
    "disallowed-unique-constraint": (
        'op.create_unique_constraint("uq_names", "tutorials", ["name"])'
    ),
    "ban-drop-column": 'op.drop_column("tutorials", "name")',
}
# Their safe forms: built concurrently, added nullable, a new table.
SAFE = {
    "an index built concurrently": (
        "with op.get_context().autocommit_block():\n"
        '        op.create_index("ix_names", "tutorials", ["name"],'
        " postgresql_concurrently=True, if_not_exists=True)"
    ),
    "a nullable column": 'op.add_column("tutorials", sa.Column("note", sa.Text()))',
    "a new table": (
        'op.create_table("notes", sa.Column("note_id", sa.BigInteger(), sa.Identity(),'
        ' primary_key=True), sa.Column("text", sa.Text(), nullable=False))'
    ),
}


def revision(upgrade: str, accept: str = "") -> str:
    return REVISION.replace("<ACCEPT>", accept).replace("<UPGRADE>", upgrade)


def lint_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> list[str]:
    """The lint's lines for the project's migrations plus a revision of `body`."""
    with_a_revision(tmp_path, monkeypatch, "5afe00000001_a_release.py", body)
    return [str(problem) for problem in migrations.lint(alembic_config())]


@pytest.mark.parametrize(("rule", "upgrade"), HAZARDS.items(), ids=HAZARDS.keys())
def test_a_hazardous_revision_fails_the_lint_naming_it_and_the_rule(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rule: str,
    upgrade: str,
) -> None:
    """Each migration that takes a lock for long on a table in use fails `lint`, in a line
    naming the revision file, its id and squawk's rule; the command exits 1."""
    with_a_revision(tmp_path, monkeypatch, "5afe00000001_a_release.py", revision(upgrade))
    assert migrations.main(["lint"]) == 1
    lines = capsys.readouterr().err.splitlines()
    expected = f"5afe00000001_a_release.py: revision 5afe00000001: {rule}: "
    assert any(line.startswith(expected) for line in lines), lines


@pytest.mark.parametrize("upgrade", SAFE.values(), ids=SAFE.keys())
def test_the_safe_forms_pass_the_lint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upgrade: str
) -> None:
    """The same changes made the expand/contract way pass, as do the project's own revisions."""
    assert lint_with(tmp_path, monkeypatch, revision(upgrade)) == []


def test_a_revision_accepts_a_finding_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`# squawk: accept <rule>: <reason>` in the revision lets that finding pass, also written
    indented, inside upgrade() beside the operation it accepts."""
    hazard = HAZARDS["changing-column-type"]
    reason = "# squawk: accept changing-column-type: tutorials is empty in every environment"
    assert lint_with(tmp_path, monkeypatch, revision(hazard, reason + "\n")) == []
    indented = revision(f"{reason}\n    {hazard}")
    monkeypatch.undo()  # the project's own migrations again, for the second copy
    assert lint_with(tmp_path / "indented", monkeypatch, indented) == []


def test_an_acceptance_without_a_reason_fails_the_lint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acceptance needs its reason: without one, it fails the lint itself."""
    unreasoned = "# squawk: accept changing-column-type:\n"
    assert lint_with(
        tmp_path, monkeypatch, revision(HAZARDS["changing-column-type"], unreasoned)
    ) == [
        "5afe00000001_a_release.py: revision 5afe00000001: accepting changing-column-type"
        " needs a reason"
    ]


@pytest.mark.commits
async def test_autogenerate_builds_an_index_on_an_existing_table_concurrently(
    empty_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index added to a model whose table exists: the revision autogenerate writes creates
    it CONCURRENTLY in an autocommit block (and its downgrade drops it likewise); it passes
    the lint, and upgrades and downgrades a real database."""
    with_a_revision(tmp_path, monkeypatch, "5afe00000001_a_release.py", revision("pass"))
    await upgrade(empty_engine)
    tutorials = Base.metadata.tables["tutorials"]
    index = sa.Index("ix_tutorials_name", tutorials.c.name)
    try:
        async with empty_engine.connect() as connection:
            await connection.run_sync(
                lambda sync: command.revision(
                    alembic_config(sync), "index names", autogenerate=True, rev_id="5afe00000002"
                )
            )
    finally:
        tutorials.indexes.discard(index)
    [written] = (tmp_path / "alembic" / "versions").glob("*5afe00000002*.py")
    source = written.read_text(encoding="utf-8")
    assert source.count("with op.get_context().autocommit_block():") == 2
    assert source.count("postgresql_concurrently=True") == 2
    assert "if_not_exists=True" in source
    assert "if_exists=True" in source
    assert [str(problem) for problem in migrations.lint(alembic_config())] == []
    await upgrade(empty_engine)
    assert await current_revisions(empty_engine) == ["5afe00000002"]
    await migrations.downgrade(empty_engine, "5afe00000001")


SLOW = revision('op.execute("SELECT pg_sleep(2)")')


@pytest.mark.commits
async def test_a_migration_runs_past_the_apps_command_timeout_but_not_its_own(
    empty_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 s statement: the app's command timeout (1 s here) does not kill the migration (it
    once did, mid-way); the migrations' own statement timeout (1 s) rolls it back, whole."""
    before = head()
    with_a_revision(tmp_path, monkeypatch, "5afe00000001_a_release.py", SLOW)
    await upgrade(empty_engine, before)
    bounded = settings_for(
        empty_engine.url,
        database_command_timeout=1,
        database_migration_statement_timeout=1,
        database_migration_retries=0,
    )
    with pytest.raises(DBAPIError) as raised:
        await asyncio.wait_for(migrate(bounded), timeout=30)
    assert sqlstate(raised.value) == "57014"  # canceled by the server's statement_timeout
    assert await current_revisions(empty_engine) == [before]
    patient = settings_for(empty_engine.url, database_command_timeout=1)
    assert await asyncio.wait_for(migrate(patient), timeout=30) == (
        f"upgraded {before} to head (5afe00000001)"
    )


AFTER_A_BLOCK = revision(
    "with op.get_context().autocommit_block():\n"
    '        op.execute("SELECT 1")\n'
    '    op.add_column("tutorials", sa.Column("note", sa.Text()))'
)


@pytest.mark.commits
async def test_the_lock_timeout_holds_after_an_autocommit_block(
    empty_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An autocommit block commits the migration's transaction and its LOCAL timeouts: the
    statements after it get them again, so an ALTER TABLE behind a reader gives up after the
    lock timeout (it once waited for the statement timeout, queueing the service behind it)."""
    before = head()
    with_a_revision(tmp_path, monkeypatch, "5afe00000001_a_release.py", AFTER_A_BLOCK)
    await upgrade(empty_engine, before)
    bounded = settings_for(
        empty_engine.url, database_migration_lock_timeout=0.5, database_migration_retries=0
    )
    async with empty_engine.connect() as reader:
        await reader.execute(sa.text("LOCK TABLE tutorials IN ACCESS SHARE MODE"))
        with pytest.raises(DBAPIError) as raised:
            await asyncio.wait_for(migrate(bounded), timeout=30)
        assert sqlstate(raised.value) == "55P03"  # lock_not_available: the lock timeout
        await reader.rollback()
    assert await current_revisions(empty_engine) == [before]
    assert await asyncio.wait_for(migrate(bounded), timeout=30) == (
        f"upgraded {before} to head (5afe00000001)"
    )


def test_offline_sql_sets_the_migrations_timeouts() -> None:
    """`alembic upgrade head --sql` prints the timeouts an online run sets, first."""
    config = alembic_config()
    config.output_buffer = buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    assert "SET LOCAL lock_timeout = '5000ms';" in buffer.getvalue()
    assert "SET LOCAL statement_timeout = '60000ms';" in buffer.getvalue()


def test_offline_sql_sets_the_timeouts_again_after_an_autocommit_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL printed for a revision with an autocommit block: COMMIT, the block, BEGIN, and
    the timeouts again before the ALTER TABLE that follows."""
    before = head()
    with_a_revision(tmp_path, monkeypatch, "5afe00000001_a_release.py", AFTER_A_BLOCK)
    config = alembic_config()
    config.output_buffer = buffer = io.StringIO()
    command.upgrade(config, f"{before}:5afe00000001", sql=True)
    after_the_block = buffer.getvalue().split("SELECT 1;")[1]
    assert after_the_block.index("SET LOCAL lock_timeout") < after_the_block.index("ALTER TABLE")


def test_a_merge_revision_is_linted_around(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two branches from the head and the revision that merges them (`alembic merge heads`):
    each branch is linted, the merge (two parents, no SQL of its own) is passed over."""
    before = head()
    with_a_revision(
        tmp_path, monkeypatch, "5afe00000001_a_release.py", revision(SAFE["a nullable column"])
    )
    versions = tmp_path / "alembic" / "versions"
    sibling = revision(HAZARDS["changing-column-type"]).replace("5afe00000001", "b0b000000001")
    (versions / "b0b000000001_a_sibling.py").write_text(sibling.format(down_revision=before))
    merge = revision("pass").replace('"5afe00000001"', '"3e3e00000001"')
    merge = merge.replace('"{down_revision}"', '("5afe00000001", "b0b000000001")')
    (versions / "3e3e00000001_merge.py").write_text(merge)
    [problem] = [str(problem) for problem in migrations.lint(alembic_config())]
    assert problem.startswith(
        "b0b000000001_a_sibling.py: revision b0b000000001: changing-column-type"
    )


def test_the_projects_revisions_pass_the_lint() -> None:
    """The shipped revisions, as `make lint` sees them."""
    assert [str(problem) for problem in migrations.lint(alembic_config())] == []

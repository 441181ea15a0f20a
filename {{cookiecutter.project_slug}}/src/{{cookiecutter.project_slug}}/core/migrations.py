"""Run Alembic migrations from async code: app startup, tests, scripts, the deploy step.

`python -m <package>.core.migrations upgrade` is the deploy step: it upgrades the database to
head from the installed package (no source tree needed), and exits at once when there is
nothing to do. `python -m <package>.core.migrations lint` has squawk read each revision's SQL
(safe_migrations.py). `python -m <package>.core.migrations FILE` is alembic's post-write hook
(alembic.ini): it formats a new revision with ruff when ruff is installed, else says so.
"""

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from ..settings import PROJECT_ROOT, Settings, get_settings, invalid_settings
from .connections import sqlstate
from .database import create_engine
from .safe_migrations import lint as lint

# alembic.ini and alembic/ live at the project root, beside src/, in a source checkout; the
# wheel carries both inside the package (pyproject.toml, force-include), so an installed
# package (the Docker image) migrates too.
ALEMBIC_INI = next(
    (
        ini
        for ini in (PROJECT_ROOT / "alembic.ini", Path(__file__).parents[1] / "alembic.ini")
        if ini.is_file()
    ),
    PROJECT_ROOT / "alembic.ini",
)
# SQLSTATE lock_not_available: a statement gave up waiting for a lock (lock_timeout).
LOCK_NOT_AVAILABLE = "55P03"
# env.py holds this PostgreSQL advisory lock (transaction-scoped) while it migrates.
MIGRATION_LOCK_ID = 5_186_823_411_023_374_112


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config; with `connection`, env.py migrates on it instead of connecting."""
    if not ALEMBIC_INI.is_file():
        raise FileNotFoundError(f"{ALEMBIC_INI} not found: neither a source checkout nor a wheel")
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = connection
    config.attributes["configure_logger"] = False  # keep the running program's logging
    return config


# connect(), not begin(): alembic manages the transactions itself, and a revision's
# autocommit_block() (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE) cannot run inside a
# transaction of the caller's.
async def upgrade(engine: AsyncEngine, revision: str = "head", app_role: str | None = None) -> None:
    """Upgrade the database behind `engine` to `revision`, inside the running event loop;
    with `app_role`, that role gets its rows (GRANTs and default privileges)."""

    def run(sync: Connection) -> None:
        config = alembic_config(sync)
        config.attributes["app_role"] = app_role
        command.upgrade(config, revision)

    async with engine.connect() as connection:
        await connection.run_sync(run)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade the database behind `engine` to `revision`, inside the running event loop."""
    async with engine.connect() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


def revisions(connection: Connection, config: Config) -> tuple[set[str], set[str]]:
    """The database's current revisions and the scripts' heads."""
    current = set(MigrationContext.configure(connection).get_current_heads())
    return current, set(ScriptDirectory.from_config(config).get_heads())


def app_role_ready(connection: Connection, app_role: str | None) -> bool:
    """Whether `app_role` has its rows already (or is the migrations' own role): at head, the
    deploy step then has nothing to do. A role that is missing has not."""
    if not app_role or app_role == connection.scalar(text("SELECT current_user")):
        return True
    granted = "SELECT has_table_privilege(oid, 'alembic_version', 'SELECT') FROM pg_roles"
    return bool(connection.scalar(text(f"{granted} WHERE rolname = :r"), {"r": app_role}))


def upgrade_on(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(settings: Settings, config: Config | None = None) -> str:
    """The deploy step: upgrade to head on DATABASE_MIGRATION_URL (else DATABASE_URL); say what
    was done.

    It reads the current revision first and returns at once when that is head and the app's
    role has its rows, taking no lock, so replicas that start together never queue for
    nothing (at head, a role that lacks them gets them: a database moved to two roles).
    Otherwise every statement
    waits at most DATABASE_MIGRATION_LOCK_TIMEOUT seconds for a lock; a migration that timed
    out (it rolled back whole) tries again, DATABASE_MIGRATION_RETRIES times at most, after
    a pause that grows, and then raises the lock timeout's DBAPIError.
    """
    config = config or alembic_config()
    config.attributes["app_role"] = settings.database_url_object.username
    config.attributes["lock_timeout"] = settings.database_migration_lock_timeout
    config.attributes["statement_timeout"] = settings.database_migration_statement_timeout
    engine = create_engine(migration_settings(settings), poolclass=NullPool)
    try:
        for attempt in range(settings.database_migration_retries + 1):
            # Its own connection: reading the revision opens a transaction, which alembic
            # would take for the caller's and never commit.
            app_role = config.attributes["app_role"]
            async with engine.connect() as connection:
                current, heads = await connection.run_sync(revisions, config)
                done = current == heads and await connection.run_sync(app_role_ready, app_role)
            if done:
                return f"already at head ({', '.join(sorted(heads))}): nothing to do"
            try:
                async with engine.connect() as connection:
                    await connection.run_sync(upgrade_on, config)
            except DBAPIError as error:
                if sqlstate(error) != LOCK_NOT_AVAILABLE:
                    raise
                if attempt == settings.database_migration_retries:
                    raise
                pause = min(2.0**attempt, 30.0)
                print(
                    f"migration waited {settings.database_migration_lock_timeout:g} s for a "
                    f"lock and gave up (attempt {attempt + 1}); trying again in {pause:g} s",
                    file=sys.stderr,
                )
                await asyncio.sleep(pause)
                continue
            if current == heads:
                return f"already at head ({', '.join(sorted(heads))}): granted {app_role!r} rows"
            before = ", ".join(sorted(current)) or "an empty database"
            return f"upgraded {before} to head ({', '.join(sorted(heads))})"
        raise AssertionError("unreachable")  # the loop returns or raises
    finally:
        await engine.dispose()


# What the app's role (DATABASE_URL's, when it is not the migrations' role) may do: read and
# write the rows of the tables the migrations create, now and later (default privileges), and
# nothing more: no CREATE, ALTER, DROP or TRUNCATE, and alembic's record of the revision it
# may read but not change.
APP_ROLE_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
    " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    "REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {role}",
)


class MissingAppRoleError(Exception):
    """DATABASE_URL's role does not exist on the server the migrations run on."""


def grant_to_app_role(connection: Connection, app_role: str | None) -> None:
    """Give `app_role` its rows-only privileges on what the migrations' role owns (run in the
    migration's transaction, so every database that is migrated has them)."""
    if not app_role or app_role == connection.scalar(text("SELECT current_user")):
        return  # one role for both: nothing to grant
    found = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": app_role})
    if not found:
        raise MissingAppRoleError(
            f"DATABASE_URL's role {app_role!r} does not exist: create it (LOGIN, a password;"
            " docs/operations.md, Roles), or give DATABASE_URL the migrations' role"
        )
    role = connection.dialect.identifier_preparer.quote(app_role)
    for grant in APP_ROLE_GRANTS:
        connection.execute(text(grant.format(role=role)))


def migration_settings(settings: Settings) -> Settings:
    """`settings` for migrating: DATABASE_MIGRATION_URL as the URL when it is set (a direct
    connection, so without PgBouncer's transaction-mode workarounds), and no client-side
    timeout shorter than the migration's own statement timeout (the app's command timeout
    once killed a migration mid-way)."""
    # Only the fields given: a default given explicitly would count as chosen.
    values = {name: getattr(settings, name) for name in settings.model_fields_set}
    if settings.database_migration_url is not None:
        values |= {"database_url": settings.database_migration_url, "database_pgbouncer": False}
    server_side = settings.database_migration_statement_timeout
    values["database_command_timeout"] = server_side + 10 if server_side > 0 else 0
    return type(settings).model_validate(values)


def format_revision(path: str) -> str:
    """Fix and format a new revision file with ruff, if installed; say what was done."""
    if importlib.util.find_spec("ruff") is None:
        return f"{path} was not formatted: ruff is not installed (it comes with the dev group)"
    for arguments in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
        # A finding ruff cannot fix is for the author to see, not a reason to fail the command.
        subprocess.run([sys.executable, "-m", "ruff", *arguments, path], check=False)
    return f"{path} formatted with ruff"


def lint_revisions() -> int:
    """squawk's findings on every revision, one line each; 1 if there is any."""
    problems = lint(alembic_config())
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def main(arguments: list[str]) -> int:
    """`upgrade`: the deploy step (see `migrate`); `lint`: squawk on every revision; a revision
    file: alembic's post-write hook."""
    if arguments == ["lint"]:
        return lint_revisions()
    if arguments != ["upgrade"]:
        if len(arguments) != 1 or not arguments[0].endswith(".py"):
            print(f"usage: python -m {__package__}.migrations upgrade|lint", file=sys.stderr)
            return 2
        print(format_revision(arguments[0]))
        return 0
    try:
        settings = get_settings()
    except ValidationError as error:
        print(invalid_settings(error), file=sys.stderr)
        return 2
    url = migration_settings(settings).database_url_object
    try:
        print(asyncio.run(migrate(settings)))
    except (DBAPIError, OSError, MissingAppRoleError) as error:
        # The URL's repr masks the password; the driver's own message never contains it.
        reason = error.orig if isinstance(error, DBAPIError) else error
        print(f"error: cannot migrate {url!r}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # main() of the module env.py imports, not of this copy named __main__: the exceptions
    # env.py raises must be the classes main() catches.
    from . import migrations

    sys.exit(migrations.main(sys.argv[1:]))

"""Migrations that cannot stall the service: each revision's own SQL linted by squawk, and
autogenerate writing the safe form of what it can.

`python -m <package>.core.migrations lint` (run by `make lint`, pre-commit and CI) renders each
revision's SQL on its own (`alembic upgrade <down>:<rev> --sql`: no database needed) and has
squawk read it. A finding fails the lint, naming the revision and the rule, unless the revision
accepts it in a comment with a reason:

    # squawk: accept prefer-text-field: a name is at most 255 characters, by design

Linting each revision apart matters: over the SQL of all revisions at once, squawk takes an
index on a table that an earlier revision created for an index on a new table, and says
nothing. Alembic's own statements (its version table) are not linted.

`safe_indexes` is env.py's `process_revision_directives`: autogenerate writes an index on a
table that exists already as CREATE INDEX CONCURRENTLY inside an autocommit block (and its
downgrade's DROP INDEX likewise), which builds it without blocking writes.
"""

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op_text
from alembic.config import Config
from alembic.operations import MigrateOperation, ops
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory

# What a revision writes to accept a finding: the rule, then a reason (required).
ACCEPT = re.compile(
    r"^[ \t]*#[ \t]*squawk:[ \t]*accept[ \t]+([a-z0-9-]+)[ \t]*:[ \t]*(.*?)[ \t]*$", re.M
)
# The PostgreSQL version squawk judges by: the oldest the project supports.
PG_VERSION = "15"


@dataclass(frozen=True)
class Finding:
    revision: str
    path: Path
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path.name}: revision {self.revision}: {self.rule}: {self.message}"


def revision_sql(config: Config, script: Script) -> str:
    """The SQL of `script`'s upgrade alone, as `alembic upgrade <down>:<rev> --sql` prints it,
    without alembic's statements on its version table."""
    buffer = io.StringIO()
    config.output_buffer = buffer
    down = script.down_revision
    target = script.revision if down is None else f"{down}:{script.revision}"
    command.upgrade(config, target, sql=True)
    statements = buffer.getvalue().split(";\n")
    return ";\n".join(s for s in statements if "alembic_version" not in s)


def accepted(script: Script) -> dict[str, str]:
    """The rules `script`'s revision file accepts, with their reasons."""
    source = Path(script.path).read_text(encoding="utf-8")
    return dict(ACCEPT.findall(source))


def squawk(sql: str, path: Path, excluded: Iterable[str]) -> list[dict[str, Any]]:
    """squawk's findings on `sql` (reported as `path`), `excluded` rules left out."""
    binary = shutil.which("squawk") or str(Path(sys.executable).with_name("squawk"))
    arguments = [binary, "--reporter", "json", "--pg-version", PG_VERSION]
    # No --assume-in-transaction: alembic's SQL says BEGIN and COMMIT itself (and COMMIT
    # before an autocommit block).
    arguments += ["--stdin-filepath", str(path)]
    if excluded := ",".join(excluded):
        arguments.append(f"--exclude={excluded}")
    result = subprocess.run(arguments, input=sql, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("["):
        raise RuntimeError(f"squawk failed on {path.name}: {result.stderr.strip()}")
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def lint(config: Config) -> list[Finding | str]:
    """Every finding of every revision, and each acceptance without a reason."""
    problems: list[Finding | str] = []
    for script in ScriptDirectory.from_config(config).walk_revisions():
        if isinstance(script.down_revision, tuple):
            continue  # a merge revision (`alembic merge`): no SQL of its own from one parent
        path = Path(script.path)
        reasons = accepted(script)
        problems += [
            f"{path.name}: revision {script.revision}: accepting {rule} needs a reason"
            for rule, reason in reasons.items()
            if not reason
        ]
        for found in squawk(revision_sql(config, script), path, reasons):
            problems.append(Finding(script.revision, path, found["rule_name"], found["message"]))
    return problems


class ConcurrentIndexOp(MigrateOperation):
    """An index created or dropped CONCURRENTLY, in an autocommit block of its own; IF (NOT)
    EXISTS, so a migration that failed part way can run again (nothing rolls back outside a
    transaction)."""

    def __init__(self, index_op: ops.CreateIndexOp | ops.DropIndexOp) -> None:
        self.index_op = index_op
        index_op.kw["postgresql_concurrently"] = True
        if isinstance(index_op, ops.CreateIndexOp):
            index_op.if_not_exists = True
        else:
            index_op.if_exists = True


@renderers.dispatch_for(ConcurrentIndexOp)
def render_concurrent_index(context: AutogenContext, op: ConcurrentIndexOp) -> str:
    inner = render_op_text(context, op.index_op)
    body = "\n".join(f"    {line}" for line in inner.splitlines())
    # CONCURRENTLY cannot run inside a transaction: this commits the migration's so far.
    return f"with op.get_context().autocommit_block():\n{body}"


def made_here(
    operations: list[Any], kind: type[ops.CreateTableOp] | type[ops.DropTableOp]
) -> set[str]:
    """The tables that `operations` create (kind CreateTableOp) or drop (DropTableOp)."""
    return {op.table_name for op in operations if isinstance(op, kind)}


def concurrent(operations: list[Any], new_tables: set[str]) -> list[Any]:
    """`operations`, each index on a table not in `new_tables` made concurrent."""
    result: list[Any] = []
    for op in operations:
        if isinstance(op, ops.ModifyTableOps):
            op.ops = concurrent(op.ops, new_tables)
            result.append(op)
        elif isinstance(op, ops.CreateIndexOp | ops.DropIndexOp) and (
            op.table_name not in new_tables
        ):
            result.append(ConcurrentIndexOp(op))
        else:
            result.append(op)
    return result


def safe_indexes(context: MigrationContext, revision: Any, directives: list[Any]) -> None:
    """env.py's `process_revision_directives`: indexes on existing tables built and dropped
    concurrently (tables the revision creates, or drops, are nobody else's yet, or any more)."""
    for script in directives:
        upgrade, downgrade = script.upgrade_ops, script.downgrade_ops
        upgrade.ops = concurrent(upgrade.ops, made_here(upgrade.ops, ops.CreateTableOp))
        downgrade.ops = concurrent(downgrade.ops, made_here(downgrade.ops, ops.DropTableOp))

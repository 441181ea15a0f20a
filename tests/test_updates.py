"""Template updates with cruft, as a user takes them: two template versions in a real git
repository, projects baked with `cruft create`, changed and committed by their user, then
`cruft check` and `cruft update`; the updated project's own `make lint` and `make test`."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from .baking import TEMPLATE, UV_ENV, install, read_env, run
from .postgres import Postgres

CRUFT = str(Path(sys.executable).with_name("cruft"))
SLUG = "updated_service"  # its own role and database on the shared test server
PASSWORD = "update-test-password"  # DATABASE_PASSWORD at bake time; lands in .env only
GIT_AUTHOR = ("-c", "user.name=Template Tests", "-c", "user.email=tests@example.invalid")

# A template release, as real ones look: docs, a setting's default, a new test, a make target.
TEMPLATE_PARAGRAPH = "Run `make check` before you push: lint, then the tests, in one command.\n"
NEW_TEST = '''"""The pool's defaults."""

from {{ cookiecutter.project_slug }}.settings import Settings


def test_connections_are_recycled_within_fifteen_minutes() -> None:
    """Pooled connections are replaced before common 15-minute idle timeouts close them."""
    assert Settings.model_fields["database_pool_recycle"].default == 900
'''
MAKE_CHECK = "\n.PHONY: check\ncheck: lint test ## Lint, then test\n"
RECYCLE_OLD = "database_pool_recycle: int = 1800"
RECYCLE_NEW = "database_pool_recycle: int = 900"
SETTINGS = Path("src", SLUG, "settings.py")

# The project's user, between baking and updating: a model with its migration, README and
# repository.py edits (lines the template release does not touch).
USER_MODEL = """

class Author(Base):
    __tablename__ = "authors"

    author_id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
"""
USER_MIGRATION = '''"""create authors

Revision ID: 5d1c0ffee001
Revises: {down_revision}
Create Date: 2026-12-01 09:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1c0ffee001"
down_revision: str | Sequence[str] | None = "{down_revision}"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "authors",
        sa.Column("author_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("author_id", name=op.f("pk_authors")),
    )


def downgrade() -> None:
    op.drop_table("authors")
'''
USER_README = "Owned by the payments team; questions to #payments-oncall.\n\n"
USER_REPOSITORY = "\n\n# Ours: pages of tutorials listed at most.\nMAX_TUTORIALS_LISTED = 500\n"


def git(cwd: Path, *arguments: str) -> str:
    result = subprocess.run(
        ["git", *GIT_AUTHOR, *arguments], cwd=cwd, capture_output=True, text=True, check=True
    )
    return result.stdout


def cruft(cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run cruft in `cwd`; the caller looks at the exit code and output."""
    return subprocess.run([CRUFT, *arguments], cwd=cwd, capture_output=True, text=True)


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` (loudly failing when the template moved on)."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path.name}: {old!r} is not there exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def release_a_new_version(template: Path) -> None:
    """Change the template the way a release does, in files users rarely touch together."""
    baked = template / "{{cookiecutter.project_slug}}"
    edit(baked / "README.md", "## Test\n\n", f"## Test\n\n{TEMPLATE_PARAGRAPH}\n")
    edit(baked / "src" / "{{cookiecutter.project_slug}}" / "settings.py", RECYCLE_OLD, RECYCLE_NEW)
    (baked / "tests" / "test_pool_defaults.py").write_text(NEW_TEST, encoding="utf-8")
    append(baked / "Makefile", MAKE_CHECK)


@dataclass(frozen=True)
class Versions:
    """A template repository with two commits: the first tagged v1.0.0, and `new` (HEAD)."""

    repository: Path
    new: str


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """This template's files as commit 1 (tag v1.0.0), a release changing several as commit 2."""
    repository = tmp_path_factory.mktemp("template-repository")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=TEMPLATE,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (TEMPLATE / name).is_file():  # a file deleted but not yet committed is listed too
            (repository / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TEMPLATE / name, repository / name)
    git(repository, "init", "-q", "-b", "main")
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", "The template as it is")
    git(repository, "tag", "v1.0.0")
    release_a_new_version(repository)
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", "A release")
    return Versions(repository, git(repository, "rev-parse", "HEAD").strip())


def cruft_create(versions: Versions, output: Path, checkout: str, **context: str) -> Path:
    """`cruft create --no-input --checkout` into `output`, the password from the environment."""
    output.mkdir(parents=True, exist_ok=True)
    context = {"project_name": "Updated Service", **context}
    result = subprocess.run(
        [
            *(CRUFT, "create", "--no-input", str(versions.repository), "--checkout", checkout),
            *("--extra-context", json.dumps(context)),
        ],
        cwd=output,
        env={**os.environ, "DATABASE_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return output / SLUG


def cookiecutter_bake(versions: Versions, output: Path) -> Path:
    """Plain `cookiecutter --no-input` of the template repository's checked-out (new) tree."""
    subprocess.run(
        [
            *(sys.executable, "-m", "cookiecutter", "--no-input", str(versions.repository)),
            *("--output-dir", str(output), "project_name=Updated Service"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "HOME": str(output)},  # its replay file lands there too
    )
    return output / SLUG


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def start_a_repository(project: Path) -> None:
    """What a user does right after baking: git init, and commit everything (not .env)."""
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Baked")


def change_as_a_user(project: Path) -> dict[Path, bytes]:
    """A model with its migration, README and repository.py edits; committed. Returns the
    changed files' contents."""
    [initial] = (project / "alembic" / "versions").glob("*.py")
    down_revision = re.search(r'^revision: str = "(\w+)"', initial.read_text(), re.M)
    assert down_revision is not None
    migration = project / "alembic" / "versions" / "2026_12_01_0930-5d1c0ffee001_authors.py"
    migration.write_text(USER_MIGRATION.format(down_revision=down_revision[1]), encoding="utf-8")
    append(project / "src" / SLUG / "models.py", USER_MODEL)
    append(project / "src" / SLUG / "repository.py", USER_REPOSITORY)
    readme = project / "README.md"
    title, _, rest = readme.read_text(encoding="utf-8").partition("\n\n")
    readme.write_text(f"{title}\n\n{USER_README}{rest}", encoding="utf-8")
    commit_all(project, "Authors")
    changed = [
        migration,
        readme,
        *(project / "src" / SLUG / name for name in ("models.py", "repository.py")),
    ]
    return {path: path.read_bytes() for path in changed}


@dataclass(frozen=True)
class Update:
    """A project baked at the old version, changed by its user, then updated to the new one."""

    project: Path
    user_files: dict[Path, bytes]
    env_before: bytes
    check_before: int
    check_after: int


@pytest.fixture(scope="module")
def update(
    versions: Versions, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Update:
    """Bake v1.0.0 on the test server, commit, change as a user, commit, `cruft update -y`."""
    context = {"db_host": postgres.host, "db_port": str(postgres.port)}
    project = cruft_create(versions, tmp_path_factory.mktemp("update"), "v1.0.0", **context)
    start_a_repository(project)
    user_files = change_as_a_user(project)
    env_before = (project / ".env").read_bytes()
    check_before = cruft(project, "check").returncode
    started = time.perf_counter()
    updated = cruft(project, "update", "-y")
    seconds = time.perf_counter() - started
    assert updated.returncode == 0, updated.stdout + updated.stderr
    print(f"cruft update took {seconds:.1f} s")  # shown with `pytest -s`
    return Update(project, user_files, env_before, check_before, cruft(project, "check").returncode)


def tracked_files(project: Path) -> list[Path]:
    return [project / name for name in git(project, "ls-files", "-z").split("\0") if name]


def test_check_says_behind_before_and_current_after(update: Update) -> None:
    """`cruft check` exits 1 while the template has a newer commit, 0 after the update."""
    assert (update.check_before, update.check_after) == (1, 0)


def test_the_template_release_arrives(update: Update) -> None:
    """The release's README paragraph, setting default, test file and make target are there."""
    project = update.project
    assert TEMPLATE_PARAGRAPH in (project / "README.md").read_text(encoding="utf-8")
    assert RECYCLE_NEW in (project / SETTINGS).read_text(encoding="utf-8")
    assert (project / "tests" / "test_pool_defaults.py").read_text() == NEW_TEST.replace(
        "{{ cookiecutter.project_slug }}", SLUG
    )
    assert (project / "Makefile").read_text().endswith(MAKE_CHECK)


def test_every_user_change_survives_and_nothing_conflicts(update: Update) -> None:
    """The user's model, migration, README and repository.py edits are intact; no .rej, no
    conflict markers, no unmerged path; .env and the migration history are untouched."""
    project = update.project
    readme = project / "README.md"
    assert USER_README in readme.read_text(encoding="utf-8")  # the release changed it too
    for path, content in update.user_files.items():
        assert path == readme or path.read_bytes() == content, path
    assert not list(project.rglob("*.rej"))
    for path in tracked_files(project):
        assert not re.search(r"^(<<<<<<<|>>>>>>>) ", path.read_text(encoding="utf-8"), re.M), path
    assert git(project, "diff", "--name-only", "--diff-filter=U") == ""
    assert (project / ".env").read_bytes() == update.env_before
    assert len(list((project / "alembic" / "versions").glob("*.py"))) == 2


def test_the_recorded_answers_agree_and_follow_the_update(
    update: Update, versions: Versions
) -> None:
    """.cruft.json names the new commit; .cookiecutter.json holds the same answers; no
    committed file holds the password."""
    state = json.loads((update.project / ".cruft.json").read_text())
    replay = json.loads((update.project / ".cookiecutter.json").read_text())["cookiecutter"]
    assert state["commit"] == versions.new
    answers = state["context"]["cookiecutter"]
    assert replay == {key: answers[key] for key in replay}
    assert set(replay) == {key for key in answers if not key.startswith("_")}
    for path in tracked_files(update.project):
        assert PASSWORD not in path.read_text(encoding="utf-8"), path


def test_the_updated_project_passes_its_own_checks(update: Update, postgres: Postgres) -> None:
    """After the update, the steps of the project's CI pass: make lint (once the user's revision
    accepts what squawk, new in it, finds there, as the CHANGELOG says), make migrate, alembic
    check (the user's model and revision agree), make test (the release's new test with them)."""
    app = urlsplit(read_env(update.project)["DATABASE_URL"])  # the app's role, as make db
    postgres.provision(
        SLUG, PASSWORD, SLUG, app=(unquote(app.username or ""), unquote(app.password or ""))
    )
    install(update.project)
    found = run(update.project, "make", "lint", check=False)
    rules = ["prefer-bigint-over-int", "prefer-text-field"]
    assert [rule for rule in rules if f"5d1c0ffee001: {rule}:" not in found.stderr] == []
    [revision] = (update.project / "alembic" / "versions").glob("*_authors.py")
    accepted = "".join(f"# squawk: accept {rule}: authors ran before the lint\n" for rule in rules)
    revision.write_text(accepted + revision.read_text(encoding="utf-8"), encoding="utf-8")
    run(update.project, "make", "lint")
    run(update.project, "make", "migrate")
    run(update.project, "alembic", "check")
    tested = run(update.project, "make", "test", PYTEST_ADDOPTS="-v").stdout  # -n auto: by name
    assert "PASSED tests/test_pool_defaults.py::" in tested


def test_both_sides_changing_a_line_is_a_conflict_that_keeps_the_users_edit(
    versions: Versions, tmp_path: Path
) -> None:
    """The user changed the line the release changes: git's conflict markers, both sides
    shown, the path unmerged; the user's value is not lost."""
    project = cruft_create(versions, tmp_path, "v1.0.0")
    start_a_repository(project)
    mine = "database_pool_recycle: int = 600"
    edit(project / SETTINGS, RECYCLE_OLD, mine)
    commit_all(project, "Recycle sooner")
    updated = cruft(project, "update", "-y")
    settings = (project / SETTINGS).read_text(encoding="utf-8")
    assert f"<<<<<<< ours\n    {mine}\n=======\n    {RECYCLE_NEW}\n>>>>>>> theirs\n" in settings
    assert git(project, "diff", "--name-only", "--diff-filter=U") == f"{SETTINGS}\n"
    assert "conflicts" in updated.stdout + updated.stderr, updated.stdout + updated.stderr
    assert not list(project.rglob("*.rej"))


def test_an_answers_file_with_the_removed_db_password_still_updates(
    versions: Versions, tmp_path: Path
) -> None:
    """Answers recorded before 0.2.0 hold `db_password`, a variable gone since: the update
    ignores it, and the rewritten .cruft.json drops it."""
    project = cruft_create(versions, tmp_path, "v1.0.0")
    cruft_json = project / ".cruft.json"
    state = json.loads(cruft_json.read_text())
    state["context"]["cookiecutter"]["db_password"] = "stored-by-an-old-version"
    cruft_json.write_text(json.dumps(state, indent=2))
    start_a_repository(project)
    updated = cruft(project, "update", "-y")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "db_password" not in cruft_json.read_text()
    assert RECYCLE_NEW in (project / SETTINGS).read_text(encoding="utf-8")
    for path in tracked_files(project):
        assert "stored-by-an-old-version" not in path.read_text(encoding="utf-8"), path


def tree(project: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `project` but .env and .secrets/ (new passwords each bake): its mode
    and bytes, by relative path."""
    return {
        path.relative_to(project).as_posix(): (path.stat().st_mode, path.read_bytes())
        for path in sorted(project.rglob("*"))
        if path.is_file() and path.name != ".env" and ".secrets" not in path.parts
    }


def test_the_same_answers_at_the_same_commit_bake_the_same_bytes(
    versions: Versions, tmp_path: Path
) -> None:
    """Two `cruft create` runs at one commit, seconds apart, and a `cookiecutter` bake of the
    same commit: identical files and modes, but for .env (and cookiecutter has no .cruft.json)."""
    first = tree(cruft_create(versions, tmp_path / "first", versions.new))
    time.sleep(1.1)  # a timestamp in seconds would differ
    second = tree(cruft_create(versions, tmp_path / "second", versions.new))
    assert first == second
    del first[".cruft.json"]
    assert tree(cookiecutter_bake(versions, tmp_path / "cookiecutter")) == first


def template_job(project: Path) -> dict[str, Any]:
    """The baked CI workflow's `template` job."""
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    # YAML 1.1 reads the key `on` as true.
    assert {"schedule", "workflow_dispatch"} <= set(workflow[True])
    return dict(workflow["jobs"]["template"])


def run_template_job(project: Path) -> subprocess.CompletedProcess[str]:
    """The job's last step, run in `project` with this machine's uv as setup-uv gives it."""
    script = template_job(project)["steps"][-1]["run"]
    return run(
        project,
        "bash",
        "-c",
        script,
        check=False,
        venv=Path(sys.executable).parent.parent,
        **UV_ENV,
    )


def test_the_scheduled_ci_job_fails_when_behind_and_passes_when_current(
    versions: Versions, update: Update, tmp_path: Path
) -> None:
    """The baked workflow's `template` job runs on schedule or by hand only; its cruft check
    fails for a project behind its template and passes once it is updated."""
    behind = cruft_create(versions, tmp_path / "behind", "v1.0.0")
    job = template_job(behind)
    assert "push" not in job["if"]
    assert "pull_request" not in job["if"]
    assert run_template_job(behind).returncode == 1
    assert run_template_job(update.project).returncode == 0


def test_the_scheduled_ci_job_does_nothing_without_cruft(cookies_session: Any) -> None:
    """In a project baked with plain cookiecutter (no .cruft.json), the job passes, saying why."""
    project = Path(cookies_session.bake().project_path)
    result = run_template_job(project)
    assert result.returncode == 0
    assert "not made with cruft" in result.stdout


def test_ci_runs_the_cruft_the_template_is_tested_with() -> None:
    """The workflow's `uvx cruft@X` is the cruft pinned in the template's dev group."""
    workflow = TEMPLATE / "{{cookiecutter.project_slug}}" / ".github" / "workflows" / "ci.yml"
    pinned = re.search(r"cruft@([\d.]+)", workflow.read_text())
    dev = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert pinned is not None
    assert f"cruft=={pinned[1]}" in dev


def test_a_project_baked_with_cookiecutter_links_to_its_commit_exactly(
    versions: Versions, tmp_path: Path
) -> None:
    """`cruft link` with the answers in .cookiecutter.json: check passes and diff is empty."""
    project = cookiecutter_bake(versions, tmp_path)
    # As the baked README says: the whole answers file, `_template` and all.
    answers = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    linked = cruft(
        project,
        "link",
        str(versions.repository),
        "--checkout",
        versions.new,
        "--no-input",
        "--extra-context",
        json.dumps(answers),
    )
    assert linked.returncode == 0, linked.stdout + linked.stderr
    start_a_repository(project)
    assert cruft(project, "check").returncode == 0
    differences = cruft(project, "diff", "--exit-code")
    assert differences.returncode == 0, differences.stdout


def test_the_changelog_names_the_templates_version() -> None:
    """CHANGELOG.md opens with Unreleased, then the release pyproject.toml's version names."""
    headings = re.findall(r"^## \[([^\]]+)\]", (TEMPLATE / "CHANGELOG.md").read_text(), re.M)
    version = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["project"]["version"]
    assert headings[:2] == ["Unreleased", version]

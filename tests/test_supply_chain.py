"""The supply chain of the template and of every bake: workflows that pass zizmor, Dependabot
configurations that Dependabot's schema accepts, a CI that installs only the committed lock,
and the fastapi bake's image passing hadolint."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from .baking import TEMPLATE, TEMPLATE_UV, UV_ENV, check_schema, load_yaml, run

ZIZMOR = str(Path(sys.executable).with_name("zizmor"))
HADOLINT = str(Path(sys.executable).with_name("hadolint"))
WORKFLOWS = [
    TEMPLATE / ".github" / "workflows" / "ci.yml",
    TEMPLATE / "{{cookiecutter.project_slug}}" / ".github" / "workflows" / "ci.yml",
]
# `uses: owner/repo@<40 hex digits> # vX.Y.Z`: a commit, and the release it is, for people
# and for Dependabot, which bumps both.
PINNED = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$")
# What each choice's Dependabot configuration must cover.
ECOSYSTEMS = {
    "none": {"uv", "github-actions"},
    "fastapi": {"uv", "github-actions", "docker"},
}


@pytest.fixture(scope="module", params=list(ECOSYSTEMS))
def bake(request: pytest.FixtureRequest, cookies_session: Any) -> Path:
    """A project baked with each web_framework choice (read-only)."""
    result = cookies_session.bake(extra_context={"web_framework": request.param})
    assert result.exception is None, result.exception
    return Path(result.project_path)


def zizmor(*inputs: Path) -> subprocess.CompletedProcess[str]:
    """zizmor at its default persona, offline (no token, no network): JSON findings on stdout,
    the inputs it audited on stderr."""
    return subprocess.run(
        [ZIZMOR, "--offline", "--no-config", "--format", "json", *map(str, inputs)],
        capture_output=True,
        text=True,
    )


def findings(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Each finding as `audit at file:line`, for a readable assertion."""
    return [
        f"{finding['ident']} at {location['symbolic']['key']['Local']['verbatim_path']}:"
        f"{location['concrete']['location']['start_point']['row'] + 1}"
        for finding in json.loads(result.stdout)
        for location in finding["locations"][:1]
    ]


def test_the_templates_workflow_and_dependabot_pass_zizmor() -> None:
    """zizmor audits the template's .github/ (workflow and dependabot.yml): no finding."""
    result = zizmor(TEMPLATE / ".github")
    assert findings(result) == []
    assert result.returncode == 0, result.stderr
    for audited in ("workflows/ci.yml", "dependabot.yml"):
        assert f"completed {TEMPLATE / '.github' / audited}" in result.stderr


def test_a_bakes_workflow_dependabot_and_pre_commit_pass_zizmor(bake: Path) -> None:
    """The baked .github/ and pre-commit configuration, as the bake's `make lint` audits them:
    no finding."""
    inputs = (bake / ".github", bake / ".pre-commit-config.yaml")
    result = zizmor(*inputs)
    assert findings(result) == []
    assert result.returncode == 0, result.stderr
    for audited in (".github/workflows/ci.yml", ".github/dependabot.yml"):
        assert f"completed {bake / audited}" in result.stderr


def test_zizmor_finds_what_the_workflows_no_longer_do(tmp_path: Path) -> None:
    """The check is not vacuous: the baked workflow with a tag for a commit and checkout's
    default (the token persisted) again gives zizmor's unpinned-uses and artipacked findings."""
    workflow = WORKFLOWS[1].read_text(encoding="utf-8")
    workflow = re.sub(r"actions/checkout@\w+ # (v\d+)\S*", r"actions/checkout@\1", workflow)
    workflow = workflow.replace("        with:\n          persist-credentials: false\n", "")
    (tmp_path / "ci.yml").write_text(workflow, encoding="utf-8")
    result = zizmor(tmp_path / "ci.yml")
    assert result.returncode != 0
    assert {finding.split()[0] for finding in findings(result)} == {"unpinned-uses", "artipacked"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=["template", "bake"])
def test_every_action_is_pinned_to_a_commit_named_by_its_release(workflow: Path) -> None:
    """Every `uses:` is a full commit with its release beside it; every checkout leaves no
    token behind; nothing is granted at the top, and each job names its own permissions."""
    text = workflow.read_text(encoding="utf-8")
    uses = [line for line in text.splitlines() if "uses:" in line]
    assert uses
    assert [line for line in uses if not PINNED.match(line)] == []
    parsed = load_yaml(workflow)
    assert parsed["permissions"] == {}
    for name, job in parsed["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_both_workflows_pin_the_same_releases() -> None:
    """An action used by the template's and the baked workflow is at one commit in both."""
    pins = [
        {
            match[1]: (match[2], match[3])
            for match in map(PINNED.match, path.read_text().splitlines())
            if match
        }
        for path in WORKFLOWS
    ]
    shared = pins[0].keys() & pins[1].keys()
    assert shared
    assert {action: pins[0][action] for action in shared} == {
        action: pins[1][action] for action in shared
    }


def check_dependabot(path: Path, ecosystems: set[str]) -> None:
    """Valid by Dependabot's schema; the given ecosystems, weekly, each update in a group."""
    check_schema("dependabot", path)
    updates = load_yaml(path)["updates"]
    assert {update["package-ecosystem"] for update in updates} == ecosystems
    for update in updates:
        assert update["schedule"]["interval"] == "weekly"
        assert update["cooldown"]["default-days"] >= 7
        assert [group["patterns"] for group in update["groups"].values()] == [["*"]]


def test_the_templates_dependabot_covers_its_tools_and_both_workflows() -> None:
    """The template's own: its uv lock, and the actions of its workflow and of the bake's."""
    path = TEMPLATE / ".github" / "dependabot.yml"
    check_dependabot(path, ECOSYSTEMS["none"])
    updates = {update["package-ecosystem"]: update for update in load_yaml(path)["updates"]}
    assert updates["github-actions"]["directories"] == ["/", "/{{cookiecutter.project_slug}}"]


def test_a_bakes_dependabot_covers_its_dependencies_actions_and_image(bake: Path) -> None:
    """uv and GitHub Actions in every bake; the Dockerfile's base image with fastapi."""
    answers = json.loads((bake / ".cookiecutter.json").read_text())["cookiecutter"]
    check_dependabot(bake / ".github" / "dependabot.yml", ECOSYSTEMS[answers["web_framework"]])


def test_pre_commit_runs_the_projects_own_zizmor(bake: Path) -> None:
    """The zizmor hook is offline, at the version of the dev group, which `make lint` runs."""
    repos = {repo["repo"]: repo for repo in load_yaml(bake / ".pre-commit-config.yaml")["repos"]}
    hook = repos["https://github.com/zizmorcore/zizmor-pre-commit"]
    assert [(h["id"], h["args"]) for h in hook["hooks"]] == [("zizmor", ["--offline"])]
    dev = tomllib.loads((bake / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert f"zizmor=={hook['rev'][1:]}" in dev
    lint = run(bake, "make", "--dry-run", "lint").stdout
    assert "zizmor --offline" in lint


def locked_install(project: Path) -> subprocess.CompletedProcess[str]:
    """`make install` as the baked CI runs it (UV_LOCKED from the workflow's env)."""
    workflow = load_yaml(project / ".github" / "workflows" / "ci.yml")
    env = {**UV_ENV, "UV_LOCKED": workflow["jobs"]["test"]["env"]["UV_LOCKED"]}
    return run(project, "make", "install", f"UV={TEMPLATE_UV}", check=False, **env)


def test_ci_installs_the_committed_lock_or_fails(cookies: Any) -> None:
    """The baked CI's install refuses a project without uv.lock, then one whose uv.lock does
    not match pyproject.toml, each saying so, and installs nothing."""
    project = Path(cookies.bake().project_path)
    without = locked_install(project)
    assert without.returncode != 0
    assert "Unable to find lockfile at `uv.lock`" in without.stderr
    run(project, str(TEMPLATE_UV), "lock", "--quiet", **UV_ENV)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(re.sub(r'"asyncpg>=[^"]*"', '"asyncpg<99"', text), encoding="utf-8")
    stale = locked_install(project)
    assert stale.returncode != 0
    assert "The lockfile at `uv.lock` needs to be updated" in stale.stderr
    assert not list(project.glob(".venv/lib/python*/site-packages/sqlalchemy"))


# For the harness: a multi-stage image as the team's shipping guide describes it (uv's Docker
# guide, a numeric non-root user), and one with the faults hadolint exists to catch.
CLEAN_DOCKERFILE = """\
FROM python:3.13-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9.9 /uv /bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-install-project --no-dev
COPY . .
RUN uv sync --locked --no-dev

FROM python:3.13-slim-bookworm
RUN useradd --create-home --uid 10001 app
COPY --from=build --chown=10001:10001 /app /app
USER 10001
WORKDIR /app
CMD ["/app/.venv/bin/uvicorn", "service.web:app"]
"""
FAULTY_DOCKERFILE = """\
FROM python:latest AS build
RUN apt-get update && apt-get install -y gcc
COPY . /app
RUN cd /app && pip install .

FROM python
COPY --from=build /app /app
CMD uvicorn service.web:app
"""


def hadolint(dockerfile: Path) -> tuple[int, list[str]]:
    """hadolint's exit status and its findings (`DLxxxx at line`), with the project's own
    .hadolint.yaml if it has one (run in its directory) and no user configuration."""
    result = subprocess.run(
        [HADOLINT, "--format", "json", dockerfile.name],
        cwd=dockerfile.parent,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(dockerfile.parent / ".no-config")},
    )
    found = [f"{item['code']} at {item['line']}" for item in json.loads(result.stdout or "[]")]
    return result.returncode, found


def test_hadolint_passes_a_clean_image_and_names_each_fault(tmp_path: Path) -> None:
    """The harness works before any Dockerfile exists: a clean multi-stage image passes, a
    faulty one fails with the rule of each fault."""
    (tmp_path / "clean" / "Dockerfile").parent.mkdir()
    (tmp_path / "clean" / "Dockerfile").write_text(CLEAN_DOCKERFILE)
    (tmp_path / "Dockerfile").write_text(FAULTY_DOCKERFILE)
    assert hadolint(tmp_path / "clean" / "Dockerfile") == (0, [])
    status, found = hadolint(tmp_path / "Dockerfile")
    assert status != 0
    codes = {finding.split()[0] for finding in found}
    assert codes >= {"DL3007", "DL3008", "DL3003", "DL3006", "DL3025"}


def test_the_fastapi_bakes_dockerfiles_pass_hadolint(cookies_session: Any) -> None:
    """Every Dockerfile of a fastapi bake (there is at least one: the production image) passes
    hadolint with no finding; an ignore lives in the bake's .hadolint.yaml, with its reason."""
    project = Path(cookies_session.bake(extra_context={"web_framework": "fastapi"}).project_path)
    dockerfiles = [
        path
        for path in project.rglob("*Dockerfile*")
        if path.is_file() and ".venv" not in path.parts
    ]
    assert dockerfiles, "a fastapi bake ships its production image's Dockerfile"
    assert {path.relative_to(project).as_posix(): hadolint(path) for path in dockerfiles} == {
        path.relative_to(project).as_posix(): (0, []) for path in dockerfiles
    }

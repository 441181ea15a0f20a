"""The baked README's newcomer walk, taken from the README itself: add a model, a migration,
(with the web service) a route, and a test, then lint and test the project, for real.

Each block of the walk follows a marker, `<!-- newcomer: ACTION [PATH] -->`: `append` adds
the block at the end of PATH, `create` writes PATH anew, and `run` runs each line in the
project as a shell command
(with `.venv`'s tools first on PATH, as in the activated `.venv` the README names). A block's
leading import lines go with the file's other imports, as the README asks; its `make fmt` then
sorts them. So the README cannot drift from what is tested.

Also: every relative link of a bake (its README and docs/operations.md) reaches a file and
heading of the bake, nothing in a bake points into the template (docs/design.md), and every
relative link of the template's README and docs reaches a file and heading of the template."""

import re
from pathlib import Path
from typing import Any

import pytest

from .baking import TEMPLATE, bake, install, run
from .postgres import Postgres

STEP = re.compile(r"^<!-- newcomer: (\w+) ?(\S*) -->\n```\w+\n(.*?)^```", re.M | re.S)
IMPORT = re.compile(r"^(?:from|import) ")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def split_imports(block: str) -> tuple[str, str]:
    """A block's leading import lines, and the code after them."""
    lines = block.splitlines(keepends=True)
    count = next((i for i, line in enumerate(lines) if not IMPORT.match(line)), len(lines))
    return "".join(lines[:count]), "".join(lines[count:]).lstrip("\n")


def with_imports(source: str, imports: str) -> str:
    """`source` with `imports` placed before its first import line."""
    first = re.search(r"^(?:from|import) ", source, re.M)
    assert first is not None, "a module without imports"
    return source[: first.start()] + imports + source[first.start() :]


def apply(project: Path, action: str, path: str, block: str) -> list[str]:
    """Take one step of the walk in `project`; the output of each command it ran."""
    if action == "run":
        lines = [line for line in block.splitlines() if line.strip()]
        return [run(project, "sh", "-c", line).stdout for line in lines]
    target = project / path
    if action == "create":
        assert not target.exists(), f"{path} exists already"
        target.write_text(block, encoding="utf-8")
        return []
    imports, code = split_imports(block)
    source = with_imports(target.read_text(encoding="utf-8"), imports)
    if action == "append":
        source = f"{source.rstrip()}\n\n\n{code}"
    else:
        pytest.fail(f"unknown newcomer step {action!r} in the README")
    target.write_text(source, encoding="utf-8")
    return []


@pytest.mark.parametrize("web_framework", ["fastapi", "none"])
def test_the_readme_walk_adds_a_model_migration_route_and_test(
    cookies: Any, postgres: Postgres, web_framework: str
) -> None:
    """From a fresh bake (installed and migrated, as Start says), the README's blocks add notes:
    a migration generated and applied, `make fmt` and `make lint` clean, and the new tests
    pass on the real server."""
    slug = f"newcomer_{web_framework}"
    project = bake(cookies, postgres, project_slug=slug, web_framework=web_framework)
    install(project)
    run(project, "make", "migrate")
    walk = STEP.findall((project / "README.md").read_text(encoding="utf-8"))
    package = f"src/{slug}"
    routes = [("append", f"{package}/schemas.py"), ("append", f"{package}/routes.py")]
    expected = [
        ("append", f"{package}/models.py"),
        ("run", ""),
        ("append", f"{package}/repository.py"),
        *(routes if web_framework == "fastapi" else []),
        ("create", "tests/test_notes.py"),
        ("run", ""),
    ]
    assert [(action, path) for action, path, _ in walk] == expected

    outputs = [output for step in walk for output in apply(project, *step)]

    [revision] = (project / "alembic" / "versions").glob("*_add_notes.py")
    assert re.search(r'op\.create_table\(\s*"notes",', revision.read_text(encoding="utf-8"))
    tests = (project / "tests" / "test_notes.py").read_text(encoding="utf-8")
    names = re.findall(r"^async def (test_\w+)", tests, re.M)
    assert len(names) == (2 if web_framework == "fastapi" else 1)
    # The walk's last command is its pytest -v: every new test ran and passed.
    assert re.search(rf"\b{len(names)} passed\b", outputs[-1]), outputs[-1]
    for name in names:
        assert f"tests/test_notes.py::{name} PASSED" in outputs[-1], outputs[-1]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown`."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def assert_links_resolve(page: Path) -> None:
    """Every relative link of `page` reaches a file, and a heading of it where it names one."""
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        assert linked.is_file(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(linked.read_text(encoding="utf-8")), f"{page.name}: {target}"


# A pointer from a bake into the template, where the bake's user cannot follow it.
INTO_THE_TEMPLATE = re.compile(r"design\.md|the template's docs")


@pytest.mark.parametrize("web_framework", ["fastapi", "none"])
def test_a_bakes_links_stay_in_the_bake(cookies_session: Any, web_framework: str) -> None:
    """The baked README's and docs' relative links reach files and headings of the bake, and
    no file of the bake points at a template-only document."""
    result = cookies_session.bake(extra_context={"web_framework": web_framework})
    project = Path(result.project_path)
    for page in (project / "README.md", project / "docs" / "operations.md"):
        assert_links_resolve(page)
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.suffix != ".lock":
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not INTO_THE_TEMPLATE.search(text), path.relative_to(project)


def test_the_templates_links_resolve() -> None:
    """The template README's and docs' relative links reach files and headings of the template."""
    for page in [TEMPLATE / "README.md", *(TEMPLATE / "docs").glob("*.md")]:
        assert_links_resolve(page)

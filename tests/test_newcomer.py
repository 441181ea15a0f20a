"""The baked README's newcomer walk, taken from the README itself: add a model, a migration,
(with the web service) a route, and a test, then lint and test the project, for real.

Each block of the walk follows a marker, `<!-- newcomer: ACTION [PATH] -->`: `append` adds
the block at the end of PATH, `create` writes PATH anew, `create_app` puts the block into
`create_app()` before `return app`, and `run` runs each line in the project as a shell command
(with `.venv`'s tools first on PATH, as in the activated `.venv` the README names). A block's
leading import lines go with the file's other imports, as the README asks; its `make fmt` then
sorts them. So the README cannot drift from what is tested.

Also: the template docs the baked README sends its reader to, and every relative link between
the READMEs and those docs, exist."""

import re
from pathlib import Path
from typing import Any

import pytest

from .baking import TEMPLATE, bake, install, run
from .postgres import Postgres

STEP = re.compile(r"^<!-- newcomer: (\w+) ?(\S*) -->\n```\w+\n(.*?)^```", re.M | re.S)
IMPORT = re.compile(r"^(?:from|import) ")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Where `create_app` blocks go: the one `return app`, at the end of create_app().
RETURN_APP = "\n    return app\n"


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
    elif action == "create_app":
        assert source.count(RETURN_APP) == 1, f"{path}: no single `return app`"
        source = source.replace(RETURN_APP, f"\n{code}{RETURN_APP}")
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
    routes = [("append", f"{package}/schemas.py"), ("create_app", f"{package}/web.py")]
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


@pytest.mark.parametrize("web_framework", ["fastapi", "none"])
def test_the_docs_the_readmes_name_are_there(cookies_session: Any, web_framework: str) -> None:
    """The template docs a baked README names exist, and every relative link of the baked
    README, the template README and the docs reaches a file and heading that exist."""
    result = cookies_session.bake(extra_context={"web_framework": web_framework})
    baked = Path(result.project_path) / "README.md"
    named = set(re.findall(r"docs/\w+\.md", baked.read_text(encoding="utf-8")))
    assert named == {"docs/design.md", "docs/operations.md"}
    assert all((TEMPLATE / name).is_file() for name in named)
    for page in [baked, TEMPLATE / "README.md", *(TEMPLATE / "docs").glob("*.md")]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            assert linked.is_file(), f"{page.name}: {target}"
            if anchor:
                assert anchor in anchors(linked.read_text(encoding="utf-8")), (
                    f"{page.name}: {target}"
                )

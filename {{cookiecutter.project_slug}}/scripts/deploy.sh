#!/bin/sh
# `make deploy`: a release without an outage, on the compose stack. Builds the image, migrates
# (the `migrate` service), then replaces the app's replicas one at a time: a new one starts;
# once its healthcheck passes and the proxy sends it traffic, an old one gets SIGTERM, drains
# (its /ready answers 503, so the proxy stops sending it requests) and is removed. A new
# replica not ready within DEPLOY_READY_TIMEOUT seconds (120) is stopped, the image's tag is
# given back to the previous build, and the deploy exits 1, the old replicas still serving.
# docs/operations.md, "Rolling releases".
set -eu

# A setting as compose reads it: the environment, else .env, else the default.
setting() {
    value=$(printenv "$1" || :)
    if [ -z "$value" ] && [ -f .env ]; then
        value=$(sed -n "s/^$1=[\"']*\([^\"']*\).*/\1/p" .env | tail -n 1)
    fi
    echo "${value:-$2}"
}

IMAGE=$(setting APP_IMAGE {{ cookiecutter.project_slug | replace('_', '-') }}:latest)
REPLICAS=$(setting APP_REPLICAS 2)
READY_TIMEOUT=$(setting DEPLOY_READY_TIMEOUT 120)
# docker stop's wait before SIGKILL: above the app's SHUTDOWN_DRAIN_SECONDS +
# SHUTDOWN_GRACE_SECONDS (5 + 20), as compose.yaml's stop_grace_period.
STOP_TIMEOUT=30
# Run in a replica: exit 0 when the proxy lists it UP (deploy/haproxy.cfg's stats).
ROUTED_TO_ME='
import csv, socket, urllib.request
me = socket.gethostbyname(socket.gethostname()) + ":8000"
with urllib.request.urlopen("http://proxy:8404/stats;csv", timeout=2) as stats:
    rows = csv.DictReader(stats.read().decode().lstrip("# ").splitlines())
    raise SystemExit(not any(r["addr"] == me and r["status"] == "UP" for r in rows))
'

STARTED=$(date +%s)
say() { echo "deploy: $* ($(($(date +%s) - STARTED)) s)"; }

case $REPLICAS in
    '' | *[!0-9]* | 0) say "APP_REPLICAS must be a whole number of 1 or more, not '$REPLICAS'" >&2; exit 2 ;;
esac
if docker compose version >/dev/null 2>&1; then
    compose() { docker compose "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
    compose() { docker-compose "$@"; }
else
    say "neither docker compose (v2) nor docker-compose (v1) found" >&2
    exit 1
fi

# The app's running containers: their full ids, one line each.
replicas() {
    for id in $(compose ps -q app); do
        docker ps -q --no-trunc --filter "id=$id" --filter status=running
    done
}

healthy() { [ -n "$1" ] && [ -n "$(docker ps -q --filter "id=$1" --filter health=healthy)" ]; }

# Healthy by its own healthcheck (/ready), and taking traffic from the proxy.
ready() { healthy "$1" && docker exec "$1" python -c "$ROUTED_TO_ME" 2>/dev/null; }

short() { echo "$1" | cut -c 1-12; }

# A new replica beside the running ones ($1, one per line), in $new once ready.
start_replica() {
    compose up -d --no-deps --no-recreate --scale "app=$(($(echo "$1" | grep -c .) + 1))" app
    new=$(replicas | grep -vxF "${1:-none}" | head -n 1) || :
    [ -n "$new" ] || { say "compose started no new replica" >&2; exit 1; }
    say "new replica $(short "$new"): waiting until it is ready and the proxy sends it traffic"
    deadline=$(($(date +%s) + READY_TIMEOUT))
    until ready "$new"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "not ready within ${READY_TIMEOUT} s; its last lines:" >&2
            docker logs --tail 20 "$new" >&2 2>&1 || :
            docker stop -t "$STOP_TIMEOUT" "$new" >/dev/null && docker rm "$new" >/dev/null
            say "stopped it; the old replicas serve on" >&2
            exit 1
        fi
        sleep 1
    done
}

retire() {
    say "old replica $(short "$1"): SIGTERM, it drains and stops"
    docker stop -t "$STOP_TIMEOUT" "$1" >/dev/null
    docker rm "$1" >/dev/null
}

previous=$(docker images -q --no-trunc "$IMAGE")
# A deploy that fails (the build, the migration, a replica never ready) gives the tag back to
# the previous build, so a later `docker compose up` never starts what did not ship.
give_the_tag_back() {
    status=$?
    if [ "$status" -ne 0 ] && [ -n "$previous" ]; then
        docker tag "$previous" "$IMAGE" && say "$IMAGE is the previous build again" >&2
    fi
}
trap give_the_tag_back EXIT
say "building the image"
compose build app
say "migrating"
# The database and the proxy as they run: a deploy never recreates them (`run` alone would
# start, and may recreate, the services migrate depends on).
compose up -d --no-deps --no-recreate db proxy
deadline=$(($(date +%s) + READY_TIMEOUT))
until healthy "$(compose ps -q db)"; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "the database is not healthy" >&2; exit 1; }
    sleep 1
done
compose run --rm --no-deps -T migrate
# One new replica in, then one old one out, until APP_REPLICAS new ones serve. The old ones
# are the positional parameters (container ids: split on the newlines, nothing to quote).
# A stopped container of the app would be started again as the "new" replica (compose counts
# it in --scale): remove those first, so each new replica is of the new image.
compose rm -f app >/dev/null 2>&1 || :
running=$(replicas)
# shellcheck disable=SC2086
set -- $running
started=0
while [ "$started" -lt "$REPLICAS" ] || [ $# -gt 0 ]; do
    if [ "$started" -lt "$REPLICAS" ]; then
        start_replica "$running"
        running=$(printf '%s\n%s' "$running" "$new")
        started=$((started + 1))
    fi
    if [ $# -gt 0 ]; then
        retire "$1"
        running=$(echo "$running" | grep -vxF "$1") || :
        shift
    fi
done
say "done: $REPLICAS replicas of the new image"

#!/bin/sh
# Run by the postgres image on the database's first start (compose.yaml mounts it into
# /docker-entrypoint-initdb.d/): the app's role, <POSTGRES_USER>_app, which may log in and
# nothing more; the migrations, run as POSTGRES_USER (the schema's owner), grant it its rows.
# Its password comes from the app_password secret, never from the environment.
set -eu
# The password is read by psql itself (a backquoted command of \set), never an argument that
# `ps` would show.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app="${POSTGRES_USER}_app" <<'SQL'
\set password `cat /run/secrets/app_password`
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
SQL

#!/usr/bin/env bash
# Give the tests a PostgreSQL server of their own: Debian's PostgreSQL 15, a fresh cluster in
# a temp folder, on loopback only, on its own port, run as the postgres user. Idempotent.
# Needs root (apt-get, su). Used by tests/run-all.sh; tests make their own databases.
set -euo pipefail
PORT="${LOGAGENT_TEST_PG_PORT:-55432}"
DATA="${LOGAGENT_TEST_PG_DATA:-/tmp/logagent-test-pg}"
BIN=/usr/lib/postgresql/15/bin

if [ ! -x "$BIN/pg_ctl" ] || [ ! -d /usr/share/postgresql/15/extension ] \
   || [ ! -f /usr/share/postgresql/15/extension/pg_trgm.control ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-contrib >/dev/null
fi

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  echo "postgresql: already up on 127.0.0.1:$PORT"
  exit 0
fi
# A cluster left by a run that did not stop it cleanly: start afresh.
if [ -f "$DATA/postmaster.pid" ]; then
  su postgres -c "$BIN/pg_ctl -D '$DATA' stop -m immediate" >/dev/null 2>&1 || true
fi
rm -rf "$DATA"
mkdir -p "$DATA"
chown postgres:postgres "$DATA"
chmod 0700 "$DATA"
su postgres -c "$BIN/initdb -D '$DATA' -U postgres -A trust -E UTF8 --no-sync" >/dev/null
su postgres -c "$BIN/pg_ctl -D '$DATA' -l '$DATA/server.log' -w -o \
  '-p $PORT -c listen_addresses=127.0.0.1 -k $DATA -c fsync=off -c max_connections=200' start" \
  >/dev/null
echo "postgresql: $("$BIN/postgres" --version) on 127.0.0.1:$PORT"

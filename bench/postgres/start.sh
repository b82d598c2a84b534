#!/usr/bin/env bash
# sesija on PostgreSQL: a throwaway cluster of its own (scripts/postgres),
# its server processes pinned to the client's core (CPU 1) so that the
# server's core (CPU 0) runs sesija alone, as with SQLite; then the same
# server as ../start.sh with database_url and a configured key. The cluster
# is stopped and removed when the harness stops the server.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=$BENCH_TMP/sesija-postgres
"$here/../../scripts/postgres" stop "$cluster" 2>/dev/null || true
url=$(taskset -c 1 "$here/../../scripts/postgres" start "$cluster")
export ROCKET_DATABASE_URL=$url
ROCKET_SECRET_KEY=$(head -c 64 /dev/urandom | base64 -w0)
export ROCKET_SECRET_KEY
stop() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  "$here/../../scripts/postgres" stop "$cluster"
}
"$here/../start.sh" &
server=$!
trap stop TERM INT EXIT
wait "$server"

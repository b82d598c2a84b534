#!/usr/bin/env bash
# Benchmark target for the peer harness in ../shared/bench (see its README):
# a fresh data dir under $BENCH_TMP, the bench account, then the server on
# $PORT with one worker, exec'd so the harness measures the server itself.
# SESIJA_SEED_LIVE=N stores N extra live sessions (of nobody's browser)
# first; ROCKET_* variables pass through (the variants in this folder set them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${SESIJA_BIN:-$BENCH_BUILD/cargo-target/release/sesija}
seed=${SESIJA_SEED:-$BENCH_BUILD/cargo-target/release/examples/seed}
work=$BENCH_TMP/sesija
rm -rf "$work"
mkdir -p "$work"
cd "$work"
export ROCKET_ADDRESS=127.0.0.1 ROCKET_PORT="$PORT" ROCKET_WORKERS=1 ROCKET_LOG_LEVEL=critical
export ROCKET_DATA_DIR="$work/data"
printf '%s\n' "$BENCH_PASSWORD" | "$bin" user add "$BENCH_USER" --password-stdin >/dev/null
if [ "${SESIJA_SEED_LIVE:-0}" -gt 0 ]; then
  "$seed" "$ROCKET_DATA_DIR" live "$SESIJA_SEED_LIVE" >&2
fi
exec "$bin" serve

#!/usr/bin/env bash
# Figures 5, 6 and 7 of the performance budget, which the peer harness in
# ../shared/bench does not measure. Same fairness rules: the server on CPU 0
# with one worker, every client on CPU 1, release build, logging off.
#
#   startup  start-up to a ready /healthz with 1,000,000 stored sessions (3 runs)
#   storm    /user p99 while 16 clients log in continuously, against idle p99
#   purge    1,000,000 expired rows purged by the background task while /user
#            runs: purge time, /user p99 during it against p99 without it
#
# usage: bench/extra.sh [startup] [storm] [purge]     (default: all three)
#        SESIJA_PG=1 bench/extra.sh purge              the purge on PostgreSQL: a
#            throwaway cluster pinned to CPU 1, the announcement triggers included
# needs: wrk, python3, curl, taskset; builds with bench/build.sh unless BUILD=0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib=${BENCH_LIB:-$here/../../shared/bench/lib}
export BENCH_BUILD=${BENCH_BUILD:-/tmp/bench-build}
bin=$BENCH_BUILD/cargo-target/release/sesija
seed=$BENCH_BUILD/cargo-target/release/examples/seed
work=${BENCH_TMP:-/tmp/bench-run}/sesija-extra
user=${BENCH_USER:-bench} password=${BENCH_PASSWORD:-bench-password}
port=${PORT:-38700}
base=http://127.0.0.1:$port
server=

[ "${BUILD:-1}" = 0 ] || bash "$here/build.sh" >&2
for tool in wrk python3 curl taskset; do
  command -v "$tool" >/dev/null || { echo "extra.sh: $tool is missing" >&2; exit 1; }
done

export ROCKET_ADDRESS=127.0.0.1 ROCKET_PORT=$port ROCKET_WORKERS=1 ROCKET_LOG_LEVEL=critical
export ROCKET_DATA_DIR=$work/data

pg=
if [ "${SESIJA_PG:-0}" = 1 ]; then
  pg=${BENCH_TMP:-/tmp/bench-run}/sesija-extra-postgres
  "$here/../scripts/postgres" stop "$pg" 2>/dev/null || true
  admin=$(taskset -c 1 "$here/../scripts/postgres" start "$pg")
  export ROCKET_DATABASE_URL=${admin%/postgres}/sesija_bench
  ROCKET_SECRET_KEY=$(head -c 64 /dev/urandom | base64 -w0)
  export ROCKET_SECRET_KEY
fi

fresh() {
  rm -rf "$work" && mkdir -p "$work"
  if [ -n "$pg" ]; then
    psql -q "$admin" -c "DROP DATABASE IF EXISTS sesija_bench" -c "CREATE DATABASE sesija_bench"
  fi
  printf '%s\n' "$password" | "$bin" user add "$user" --password-stdin >/dev/null
}

# seed_expired N: N expired sessions of the bench account.
seed_expired() {
  if [ -n "$pg" ]; then
    psql -q "$ROCKET_DATABASE_URL" -c "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at)
      SELECT sha256(('expired' || i)::bytea), 'expired' || i, (SELECT MIN(id) FROM users), 0, 0, 1
      FROM generate_series(1, $1) AS i"
  else
    "$seed" "$ROCKET_DATA_DIR" expired "$1" >&2
  fi
}

# expired_left: how many expired rows are still stored.
expired_left() {
  if [ -n "$pg" ]; then
    psql -tA "$ROCKET_DATABASE_URL" -c "SELECT COUNT(*) FROM sessions WHERE expires_at <= EXTRACT(EPOCH FROM now())"
  else
    "$seed" "$ROCKET_DATA_DIR" count | awk '{print $3}'
  fi
}

ms_now() { date +%s%3N; }

# start [VAR=value...]: the server on CPU 0; returns once /healthz answers.
start() {
  env "$@" taskset -c 0 "$bin" serve >>"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1000); do
    curl -sf -o /dev/null "$base/healthz" && return 0
    sleep 0.01
  done
  echo "extra.sh: the server did not become ready" >&2
  exit 1
}

stop() {
  [ -n "$server" ] || return 0
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
}
finish() {
  stop
  [ -z "$pg" ] || "$here/../scripts/postgres" stop "$pg"
}
trap finish EXIT

mint() {
  BENCH_USER=$user BENCH_PASSWORD=$password taskset -c 1 python3 "$lib/mint.py" \
    --base "$base" --mode form --n "$1" --out "$work/cookies.txt" >/dev/null
}

# user_load SECONDS: wrk on /user over the minted cookies; prints "req/s p99_ms".
user_load() {
  taskset -c 1 wrk -t1 -c32 -d"$1"s --latency -s "$lib/user.lua" "$base/user" -- "$work/cookies.txt" |
    awk '/Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
         /Non-2xx/ {bad=$NF} END {printf "%s %s %s\n", rps, p99, (bad==""?0:bad)}'
}

figure_startup() {
  fresh
  "$seed" "$ROCKET_DATA_DIR" live 1000000 >&2
  local runs=()
  for _ in 1 2 3; do
    local t0; t0=$(ms_now)
    start
    runs+=($(( $(ms_now) - t0 )))
    stop
  done
  echo "startup: ready /healthz with 1,000,000 stored sessions in ${runs[*]} ms (3 runs, curl polling every 10 ms)"
}

figure_storm() {
  fresh
  start
  mint 200
  user_load 2 >/dev/null
  read -r idle_rps idle_p99 idle_bad < <(user_load 10)
  local stop_file=$work/storm.stop
  rm -f "$stop_file"
  taskset -c 1 python3 "$here/login_storm.py" "$base" "$user" "$password" 16 "$stop_file" >"$work/storm.out" &
  local storm=$!
  sleep 2
  read -r storm_rps storm_p99 storm_bad < <(user_load 10)
  touch "$stop_file"
  wait "$storm"
  stop
  echo "storm: /user idle ${idle_rps} req/s p99 ${idle_p99} ms; with 16 clients logging in: ${storm_rps} req/s p99 ${storm_p99} ms" \
    "(ratio $(awk "BEGIN {printf \"%.2f\", $storm_p99 / $idle_p99}")x; $(cat "$work/storm.out")); non-2xx ${idle_bad}/${storm_bad}"
}

figure_purge() {
  fresh
  start
  mint 1000
  stop
  # Baseline: the same restart and cold cache, nothing to purge, measured the
  # same way (runs of 3 s, median p99).
  start ROCKET_METRICS=true
  : >"$work/base.load"
  for _ in 1 2 3 4 5; do user_load 3 >>"$work/base.load"; done
  stop
  read -r base_rps base_p99 base_bad < <(sort -k2 -n "$work/base.load" |
    awk '{r+=$1; p[NR]=$2; b+=$3} END {printf "%.0f %s %d\n", r/NR, p[int((NR+1)/2)], b}')
  seed_expired 1000000
  local t0; t0=$(ms_now)
  local purged=$work/purged
  rm -f "$purged" "$work/purge.load"
  start ROCKET_METRICS=true  # the purge runs at launch
  # /user in 3 s runs for as long as the purge lasts.
  ( while [ ! -e "$purged" ]; do user_load 3 >>"$work/purge.load"; done ) &
  local load=$!
  local done_ms=
  # The purge round reports its rows when it ends; one small request a second
  # (counting the table instead would load the client's core).
  while :; do
    local rows
    rows=$(taskset -c 1 curl -sf "$base/metrics" | awk '/^sesija_purge_rows_total / {print $2}')
    if [ "${rows:-0}" -ge 1000000 ]; then done_ms=$(( $(ms_now) - t0 )); break; fi
    [ $(( $(ms_now) - t0 )) -lt "${PURGE_MAX_MS:-300000}" ] || { echo "extra.sh: purge did not finish in ${PURGE_MAX_MS:-300000} ms" >&2; break; }
    sleep 1
  done
  touch "$purged"
  wait "$load"
  stop
  local left
  left=$(expired_left)
  [ "$left" = 0 ] || echo "extra.sh: $left expired rows left after the purge" >&2
  # Runs that began while the purge ran (the last one may end after it).
  read -r purge_rps purge_p99 worst_p99 purge_bad runs < <(sort -k2 -n "$work/purge.load" |
    awk '{r+=$1; p[NR]=$2; b+=$3} END {printf "%.0f %s %s %d %d\n", r/NR, p[int((NR+1)/2)], p[NR], b, NR}')
  echo "purge: 1,000,000 expired rows gone ${done_ms:-never} ms after launch; /user during it (${runs} runs of 3 s: mean req/s, median and worst p99)" \
    "${purge_rps} req/s p99 ${purge_p99} ms (worst ${worst_p99} ms) vs ${base_rps} req/s p99 ${base_p99} ms without (5 runs of 3 s)" \
    "(ratio $(awk "BEGIN {printf \"%.2f\", $purge_p99 / $base_p99}")x); non-2xx ${base_bad}/${purge_bad}"
}

figures=("$@")
[ ${#figures[@]} -gt 0 ] || figures=(startup storm purge)
for f in "${figures[@]}"; do
  case $f in
    startup | storm | purge) "figure_$f" ;;
    *) echo "extra.sh: unknown figure $f (startup, storm, purge)" >&2; exit 2 ;;
  esac
done

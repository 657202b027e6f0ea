#!/usr/bin/env bash
# The benchmark behind `make bench`: latency and throughput of pizza-api on
# SQLite and on PostgreSQL, measured with wrk against a release build on
# 127.0.0.1, next to a ceiling (examples/ceiling.rs: tiny_http answering a
# fixed pizza with the same worker layout) that shows how much of the cost is
# our own code. One command, start to finish, on a clean clone.
#
# Two ceilings, from the same source file and with the same workers and body:
#   - "ceiling (this listener, vendor/tiny_http)": the `ceiling` example of
#     the service's own build, so on the patched tiny_http the service runs;
#   - "ceiling (tiny_http 0.12.0 as published)": bench/ceiling-upstream, a
#     project of its own (outside the [patch.crates-io]) that builds the same
#     file against the crates.io release, the reference used before the
#     listener was patched. Measured at 32 connections on read by ID only.
#
#   scripts/bench.sh                  full run (a few minutes)
#   BENCH_QUICK=1 scripts/bench.sh    smoke test: same flow, small counts
#
# Per database: start the server on a fresh database, seed pizzas through the
# API, then with wrk
#   - one keep-alive connection (-t1 -c1): p50/p99 of create, read by ID, list
#     of 10, update, soft delete and the OAuth token, each over a fixed count;
#   - 32 connections (-t2 -c32): req/s of read by ID, list of 10 and create,
#     each run followed at once by the same run against the ceiling, and
#     read by ID also by one against the tiny_http 0.12.0 ceiling; the
#     server CPU time per request of every one of these runs is recorded.
# Also: the server's peak RSS, the binary's size, start-to-healthy on an
# existing SQLite database, and backup and restore of BENCH_BACKUP_PIZZAS
# pizzas (scripts/bench/backup.py: SQLite -> file -> PostgreSQL -> file ->
# SQLite, rows per second and each command's peak RSS). The report (a Markdown table) goes to standard
# output and target/bench/results.md, everything as JSON to
# target/bench/results.json, raw wrk outputs and server logs beside them.
#
# Exits non-zero when any step fails: a server that does not start, wrk
# missing and not installable, or any run that saw an unexpected status or a
# socket error. Only 127.0.0.1 is ever loaded, every run is bounded in count
# and time, and the trap stops exactly what this script started.
#
# Knobs (environment): BENCH_REQUESTS, BENCH_TOKENS, BENCH_SECONDS, BENCH_SEED,
# BENCH_STARTS override the counts below; WORKERS is passed to the service
# and both ceilings alike. PostgreSQL runs on a private cluster of its own
# (scripts/pg-cluster.sh, durable) in PIZZA_PG_BENCH_DIR (default
# /tmp/pizza-api-pg-bench) on PIZZA_PG_BENCH_PORT (default 55434; when
# something else holds it, the bench fails with one line naming the variable);
# without PostgreSQL binaries that column is skipped, except under CI=true,
# where it is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  QUICK=1 REQUESTS=200 TOKENS=20 SECONDS_32=2 SEED=200 STARTS=3 BACKUP_PIZZAS=1000
else
  QUICK=0 REQUESTS=2000 TOKENS=50 SECONDS_32=10 SEED=1000 STARTS=10 BACKUP_PIZZAS=100000
fi
REQUESTS=${BENCH_REQUESTS:-$REQUESTS} # per one-connection latency row
TOKENS=${BENCH_TOKENS:-$TOKENS}       # OAuth token row
SECONDS_32=${BENCH_SECONDS:-$SECONDS_32} # per 32-connection throughput row
SEED=${BENCH_SEED:-$SEED}             # extra pizzas per database
STARTS=${BENCH_STARTS:-$STARTS}       # restarts for start-to-healthy
BACKUP_PIZZAS=${BENCH_BACKUP_PIZZAS:-$BACKUP_PIZZAS} # pizzas backed up and restored
# A count-limited wrk run ends as soon as its count is reached (api.lua);
# this cap only bounds a server that has become pathologically slow.
CAP_SECONDS=$((QUICK == 1 ? 60 : 300))

# Every build output where cargo puts it: CARGO_TARGET_DIR when set.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
OUT=$TARGET_DIR/bench
BIN=$TARGET_DIR/release/pizza-api
CEILING_BIN=$TARGET_DIR/release/examples/ceiling
# The same ceiling on tiny_http 0.12.0 as published (bench/ceiling-upstream);
# its target directory sits inside target/, like every other build output.
UPSTREAM_DIR=$TARGET_DIR/ceiling-upstream
UPSTREAM_BIN=$UPSTREAM_DIR/release/ceiling-upstream
LUA=scripts/bench/api.lua
# Fixed, so tokens stay valid across the run; 48 characters, well above the
# service's 32-byte minimum. Only ever used against local throwaway databases.
JWT_SECRET_BENCH=bench-only-jwt-secret-0123456789abcdefghijklmnop

export PIZZA_PG_DIR="${PIZZA_PG_BENCH_DIR:-/tmp/pizza-api-pg-bench}" PIZZA_PG_PORT="${PIZZA_PG_BENCH_PORT:-55434}"
export PIZZA_PG_DURABLE=1 PIZZA_PG_PORT_VAR=PIZZA_PG_BENCH_PORT

say() { echo "bench: $*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}

# ---------------------------------------------------------------- cleanup
STARTED_PIDS=() # every server this script started, stopped by PID only
PG_URL="" PG_DB="" PG_STARTED=0 BACKUP_PG_DB=""
WRK_PID="" # the wrk run in progress, if any
WORK=$(mktemp -d /tmp/pizza-api-bench.XXXXXX)

cleanup() {
  local status=$?
  local pid
  if [[ -n "$WRK_PID" ]]; then
    kill -TERM "$WRK_PID" 2>/dev/null || true
    wait "$WRK_PID" 2>/dev/null || true
  fi
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid"
  done
  # The servers are gone, so nothing holds a connection to the database.
  for db in "$PG_DB" "$BACKUP_PG_DB"; do
    [[ -n "$db" ]] || continue
    psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
      say "warning: could not drop PostgreSQL database $db"
  done
  if [[ "$PG_STARTED" == 1 ]]; then
    scripts/pg-cluster.sh stop >/dev/null 2>&1 || say "warning: could not stop the bench PostgreSQL cluster"
  fi
  rm -rf "$WORK"
  [[ "$status" == 0 ]] || say "exit status $status: see the messages above; what was measured is in $OUT"
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

alive() {
  # kill -0 succeeds on a zombie too: an exited server not yet reaped is dead.
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ "$state" != Z ]]
}

# SIGTERM lets the service drain and exit cleanly; SIGKILL only if it hangs.
stop_pid() {
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "warning: PID $pid ignored SIGTERM for 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

forget_pid() {
  local keep=() pid
  for pid in "${STARTED_PIDS[@]}"; do
    [[ "$pid" == "$1" ]] || keep+=("$pid")
  done
  STARTED_PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- helpers
meta() { echo "$1=$2" >>"$OUT/meta.txt"; }

# start_listener NAME LOG COMMAND...
# Starts COMMAND in the background with its stderr and stdout in LOG and
# waits for its "listening on http://127.0.0.1:PORT" line. Sets STARTED_PID
# and STARTED_PORT. The working directory is the scratch directory, so a
# developer's .env in the repository cannot leak into the measurement.
# Messages name NAME only: the command line holds the database password.
start_listener() {
  local name=$1 log=$2 i
  shift 2
  (cd "$WORK" && exec "$@") >"$log" 2>&1 &
  STARTED_PID=$!
  STARTED_PIDS+=("$STARTED_PID")
  STARTED_PORT=""
  for ((i = 0; i < 600; i++)); do
    STARTED_PORT=$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$log" | head -n 1 | grep -oE '[0-9]+$' || true)
    [[ -n "$STARTED_PORT" ]] && return 0
    alive "$STARTED_PID" || {
      tail -n 20 "$log" >&2
      die "$name exited before listening (log: $log)"
    }
    sleep 0.1
  done
  die "$name did not start listening within 60 s (log: $log)"
}

wait_healthy() {
  local port=$1 i
  for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null && return 0
    sleep 0.1
  done
  die "no 200 from http://127.0.0.1:$port/health within 60 s"
}

admin_token() {
  curl -fsS --max-time 30 "http://127.0.0.1:$1/api/v1/oauth/token" \
    -d 'grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' ||
    die "could not get an admin token from http://127.0.0.1:$1"
}

# run_wrk DB ROW OP THREADS CONNS COUNT DURATION PORT [VAR=VALUE ...]
# One wrk run of api.lua; COUNT 0 means time-limited. The raw output is kept
# and the run listed in runs.tsv for report.py. wrk failing to run at all is
# fatal; a run that merely saw errors is reported (and fails the bench) at
# the end, so one bad row does not hide the others.
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# Runs wrk once. When MEASURED_PID names the server under load, the CPU time
# it used during the run is appended to the raw output (SERVERCPU line): CPU
# per request is far steadier than req/s on a machine whose cores are shared.
run_wrk() {
  local db=$1 row=$2 op=$3 threads=$4 conns=$5 count=$6 duration=$7 port=$8
  shift 8
  local raw="$OUT/$db/$row.txt" cpu_before=""
  [[ -n "${MEASURED_PID:-}" ]] && cpu_before=$(cpu_ticks "$MEASURED_PID")
  say "$db: $row (wrk -t$threads -c$conns, $([[ $count == 0 ]] && echo "${duration}s" || echo "$count requests"))"
  # In the background and waited for, so that an interrupt reaches the trap
  # at once instead of after the run, and the trap can stop wrk too.
  env BENCH_OP="$op" BENCH_COUNT="$count" "$@" \
    wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 10s --latency -s "$LUA" "http://127.0.0.1:$port" \
    >"$raw" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || {
    tail -n 20 "$raw" >&2
    die "wrk failed for $db/$row (raw output: $raw)"
  }
  WRK_PID=""
  if [[ -n "$cpu_before" ]]; then
    echo "SERVERCPU ticks=$(($(cpu_ticks "$MEASURED_PID") - cpu_before)) hz=$(getconf CLK_TCK)" >>"$raw"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$db" "$row" "$threads" "$conns" "$count" "$raw" >>"$OUT/runs.tsv"
  grep '^RESULT' "$raw" | sed 's/^/  /' >&2 || say "  no RESULT line in $raw"
}

# The whole measurement of one database. Arguments: DB label, then the
# environment that points the service at its fresh database.
bench_database() {
  local db=$1
  shift
  mkdir -p "$OUT/$db"
  say "== $db"
  start_listener "pizza-api on $db" "$OUT/$db/server.log" env "$@" \
    APP_ENV=development APP_HOST=127.0.0.1 APP_PORT=0 LOG_LEVEL=info BCRYPT_COST=10 \
    JWT_SECRET="$JWT_SECRET_BENCH" "$BIN"
  local pid=$STARTED_PID port=$STARTED_PORT
  local MEASURED_PID=$pid
  wait_healthy "$port"
  # The ceiling gets the same number of workers as the service really runs.
  WORKERS_SEEN=$(grep -oE '[0-9]+ workers\)' "$OUT/$db/server.log" | head -n 1 | grep -oE '^[0-9]+') ||
    die "could not read the worker count from $OUT/$db/server.log"
  local token
  token=$(admin_token "$port")

  if [[ "$db" == sqlite ]]; then
    # The ceiling answers with the very bytes a real read returns; it stays
    # up for the rest of the run, for the paired throughput runs.
    curl -fsS --max-time 10 -o "$OUT/ceiling/body.json" "http://127.0.0.1:$port/api/v1/public/pizzas/1" ||
      die "could not read pizza 1 for the ceiling's body"
    start_ceiling
  fi

  # Seed through the API; the created IDs are what read, update and the
  # 32-connection read spread over.
  local seeded="$OUT/$db/seeded-ids.txt" created="$OUT/$db/created-ids.txt"
  : >"$seeded"
  : >"$created"
  run_wrk "$db" seed create 1 1 "$SEED" "$CAP_SECONDS" "$port" BENCH_TOKEN="$token" BENCH_IDS_OUT="$seeded"
  [[ $(wc -l <"$seeded") -eq "$SEED" ]] || die "$db: seeding created $(wc -l <"$seeded") of $SEED pizzas"
  if [[ "$db" == postgres ]]; then
    # What PostgreSQL's documentation asks for after a bulk load, and what
    # autovacuum does by itself within a minute: without statistics the
    # planner takes `deleted_at IS NULL` for a rare condition and sorts every
    # live row for a page of ten. Measure the steady state, not that minute.
    PG_URL="${PG_URL%/*}/$PG_DB" psql_admin -c "ANALYZE pizzas" >/dev/null || die "ANALYZE failed"
  fi

  # One connection, fixed counts. Create records its IDs so that delete can
  # delete each of them exactly once (a second delete would rightly be a 404).
  local c1=(1 1)
  run_wrk "$db" create create "${c1[@]}" "$REQUESTS" "$CAP_SECONDS" "$port" BENCH_TOKEN="$token" BENCH_IDS_OUT="$created"
  run_wrk "$db" read read "${c1[@]}" "$REQUESTS" "$CAP_SECONDS" "$port" BENCH_IDS="$seeded"
  run_wrk "$db" list list "${c1[@]}" "$REQUESTS" "$CAP_SECONDS" "$port"
  run_wrk "$db" update update "${c1[@]}" "$REQUESTS" "$CAP_SECONDS" "$port" BENCH_TOKEN="$token" BENCH_IDS="$seeded"
  run_wrk "$db" delete delete "${c1[@]}" "$REQUESTS" "$CAP_SECONDS" "$port" BENCH_TOKEN="$token" BENCH_IDS="$created"
  run_wrk "$db" token token "${c1[@]}" "$TOKENS" "$CAP_SECONDS" "$port"

  # 32 connections, fixed time; each followed by the same run against the
  # ceiling, so every ratio compares two runs made moments apart. Read by ID
  # is also compared with the ceiling on tiny_http 0.12.0 as published.
  run_wrk "$db" read_c32 read 2 32 0 "$SECONDS_32" "$port" BENCH_IDS="$seeded"
  ceiling_pair "$db" read_c32
  upstream_pair "$db" read_c32
  run_wrk "$db" list_c32 list 2 32 0 "$SECONDS_32" "$port"
  ceiling_pair "$db" list_c32
  run_wrk "$db" create_c32 create 2 32 0 "$SECONDS_32" "$port" BENCH_TOKEN="$token"
  ceiling_pair "$db" create_c32

  # VmHWM is the peak resident set over the process's whole life.
  meta "$db.peak_rss_kib" "$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
  alive "$pid" || die "$db: the server died during the run (log: $OUT/$db/server.log)"
  stop_pid "$pid"
  forget_pid "$pid"
  local errors
  errors=$(grep -cE ' (ERROR|WARN) ' "$OUT/$db/server.log" || true)
  [[ "$errors" == 0 ]] || say "$db: note: $errors ERROR/WARN line(s) in $OUT/$db/server.log"
}

CEILING_PID="" CEILING_PORT=""
UPSTREAM_PID="" UPSTREAM_PORT=""

# Both ceilings, with the same workers and the same body.
start_ceiling() {
  start_listener ceiling "$OUT/ceiling/ceiling.log" env WORKERS="$WORKERS_SEEN" CEILING_PORT=0 \
    CEILING_BODY_FILE="$OUT/ceiling/body.json" "$CEILING_BIN"
  CEILING_PID=$STARTED_PID CEILING_PORT=$STARTED_PORT
  start_listener "ceiling on tiny_http 0.12.0" "$OUT/ceiling_upstream/ceiling.log" env WORKERS="$WORKERS_SEEN" \
    CEILING_PORT=0 CEILING_BODY_FILE="$OUT/ceiling/body.json" "$UPSTREAM_BIN"
  UPSTREAM_PID=$STARTED_PID UPSTREAM_PORT=$STARTED_PORT
}

# The ceiling measured like the throughput row just run on DB (read by ID:
# the ceiling ignores the path), recorded as ceiling/DB_ROW.
ceiling_pair() {
  MEASURED_PID=$CEILING_PID run_wrk ceiling "$1_$2" read 2 32 0 "$SECONDS_32" "$CEILING_PORT" BENCH_IDS="$OUT/sqlite/seeded-ids.txt"
}

# The same run against the ceiling on tiny_http 0.12.0 as published,
# recorded as ceiling_upstream/DB_ROW.
upstream_pair() {
  MEASURED_PID=$UPSTREAM_PID run_wrk ceiling_upstream "$1_$2" read 2 32 0 "$SECONDS_32" "$UPSTREAM_PORT" BENCH_IDS="$OUT/sqlite/seeded-ids.txt"
}

bench_ceiling() {
  say "== ceiling"
  # Measured exactly like read by ID.
  local MEASURED_PID=$CEILING_PID
  run_wrk ceiling read read 1 1 "$REQUESTS" "$CAP_SECONDS" "$CEILING_PORT" BENCH_IDS="$OUT/sqlite/seeded-ids.txt"
  run_wrk ceiling read_c32 read 2 32 0 "$SECONDS_32" "$CEILING_PORT" BENCH_IDS="$OUT/sqlite/seeded-ids.txt"
  stop_pid "$CEILING_PID"
  forget_pid "$CEILING_PID"
  alive "$UPSTREAM_PID" || die "the ceiling on tiny_http 0.12.0 died during the run (log: $OUT/ceiling_upstream/ceiling.log)"
  stop_pid "$UPSTREAM_PID"
  forget_pid "$UPSTREAM_PID"
}

# psql against the bench cluster's postgres database, as its admin.
psql_admin() {
  local psql
  psql=$(command -v psql || printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
  [[ -x "$psql" ]] || return 1
  "$psql" "$PG_URL" -v ON_ERROR_STOP=1 -qtA "$@"
}

bench_postgres() {
  # Set first: a start that fails half-way still leaves a directory to remove.
  PG_STARTED=1
  local started=0
  scripts/pg-cluster.sh start || started=$?
  ((started != 3)) || die "the PostgreSQL port is taken (see above)"
  if ((started != 0)); then
    [[ "${CI:-}" == true ]] && die "CI=true and PostgreSQL could not be started"
    say "!!! PostgreSQL could not be started (no server binaries?): the PostgreSQL column is SKIPPED !!!"
    meta postgres.skipped "PostgreSQL could not be started"
    return 0
  fi
  PG_URL=$(scripts/pg-cluster.sh url)
  meta postgres_version "$(psql_admin -c 'SHOW server_version')"
  PG_DB="pizza_bench_$$_$(date +%s)"
  psql_admin -c "CREATE DATABASE \"$PG_DB\"" >/dev/null || die "could not create database $PG_DB"
  local pg_env=()
  mapfile -t pg_env < <(scripts/pg-cluster.sh env | grep -v '^DB_NAME=')
  bench_database postgres "${pg_env[@]}" DB_NAME="$PG_DB"
}

# Backup and restore of BACKUP_PIZZAS pizzas, through PostgreSQL when the
# bench cluster runs (scripts/bench/backup.py).
bench_backup() {
  say "== backup and restore ($BACKUP_PIZZAS pizzas)"
  local dir="$WORK/backup" pg_env=()
  mkdir -p "$dir"
  if [[ -n "$PG_URL" ]]; then
    BACKUP_PG_DB="pizza_bench_backup_$$_$(date +%s)"
    psql_admin -c "CREATE DATABASE \"$BACKUP_PG_DB\"" >/dev/null || die "could not create database $BACKUP_PG_DB"
    mapfile -t pg_env < <(scripts/pg-cluster.sh env | grep -v '^DB_NAME=')
    pg_env+=("DB_NAME=$BACKUP_PG_DB")
  fi
  python3 scripts/bench/backup.py "$BIN" "$dir" "$BACKUP_PIZZAS" "$OUT/backup.json" "${pg_env[@]}" ||
    die "backup and restore failed (logs: $dir)"
  cp "$dir"/*.log "$OUT/" 2>/dev/null || true
}

# ---------------------------------------------------------------- main
START_TIME=$(date +%s)

# shellcheck source=scripts/lib/need-wrk.sh
source scripts/lib/need-wrk.sh
need_wrk
command -v curl >/dev/null 2>&1 || die "curl is not installed"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"

say "building the release binary and the two ceilings"
cargo build --release --locked --quiet || die "cargo build --release failed"
cargo build --release --locked --quiet --example ceiling || die "cargo build --release --example ceiling failed"
cargo build --release --locked --quiet --manifest-path bench/ceiling-upstream/Cargo.toml --target-dir "$UPSTREAM_DIR" ||
  die "cargo build --release of bench/ceiling-upstream (the ceiling on tiny_http 0.12.0) failed"

rm -rf "$OUT"
mkdir -p "$OUT/ceiling" "$OUT/ceiling_upstream"
: >"$OUT/runs.tsv"
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta quick "$QUICK"
meta nproc "$(nproc)"
meta cpu "$(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
# `wrk -v` prints its banner and exits non-zero: keep only the first line.
meta wrk_version "$(wrk -v 2>&1 | head -n 1 | sed 's/ Copyright.*//' || true)"
meta commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
meta binary_bytes "$(stat -c %s "$BIN")"
meta latency_requests "$REQUESTS"
meta token_requests "$TOKENS"
meta throughput_seconds "$SECONDS_32"
meta seeded "$SEED"
# Other work on the machine skews every figure; the report shows how busy it was.
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"

bench_database sqlite DB_DRIVER=sqlite DB_PATH="$WORK/bench.sqlite"
meta workers "$WORKERS_SEEN"

say "== start to healthy ($STARTS starts on the existing SQLite database)"
# From the scratch directory, like every server start here (no stray .env).
(cd "$WORK" && env DB_DRIVER=sqlite DB_PATH="$WORK/bench.sqlite" APP_ENV=development LOG_LEVEL=info \
  BCRYPT_COST=10 JWT_SECRET="$JWT_SECRET_BENCH" python3 "$ROOT/scripts/bench/startup.py" \
  "$BIN" "$STARTS" "$OUT/startup.json" "$OUT/sqlite/startup.log") ||
  die "start-to-healthy measurement failed (log: $OUT/sqlite/startup.log)"

bench_postgres
bench_ceiling
bench_backup

meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta elapsed_seconds "$(($(date +%s) - START_TIME))"
say "done in $(($(date +%s) - START_TIME)) s; report follows (also in $OUT/results.md and $OUT/results.json)"
python3 scripts/bench/report.py "$OUT"

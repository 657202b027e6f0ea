#!/usr/bin/env bash
# The benchmark behind `make bench-scale`: the public list and read by ID at
# scale, on SQLite and on PostgreSQL, against a release build on 127.0.0.1.
#
#   scripts/bench-scale.sh                             1,000,000 pizzas per database
#   BENCH_SCALE_PIZZAS=20000 scripts/bench-scale.sh    the smoke run CI makes
#
# Per database, scripts/bench/lists.py creates the schema by starting the
# service once, inserts the pizzas straight into the database in one bulk
# statement (not through the API one by one), starts the service on them and
# measures each query with wrk over one keep-alive connection (p50, p99):
# first page, the cursor page after id N - 10,000 (990,000 of a million),
# `offset` at its maximum, the name filter with a rare and a common term of
# three characters or more, the created_by filter, and read by ID; it also
# records the service's peak RSS (VmHWM) over the measured run.
# scripts/bench/scale_report.py then writes the table, each target and
# whether it was met, to standard output and target/bench/scale/results.md
# (JSON beside it).
#
# The targets are reported, not enforced: a machine shared with other work
# skews latencies. The run fails when a step fails: a service that does not
# start, an answer with an unexpected status, wrk missing.
#
# PostgreSQL runs on a private cluster of its own (scripts/pg-cluster.sh,
# durable) in PIZZA_PG_SCALE_DIR (default /tmp/pizza-api-pg-scale) on
# PIZZA_PG_SCALE_PORT (default 55437; when something else holds it, the run
# fails with one line naming the variable); without PostgreSQL binaries that
# half is skipped, except under CI=true, where it is a failure.
# BENCH_LIST_SECONDS (default 3) is the length of each wrk run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PIZZAS=${BENCH_SCALE_PIZZAS:-1000000}
[[ "$PIZZAS" =~ ^[0-9]+$ ]] && ((PIZZAS >= 1000)) ||
  { echo "bench-scale: BENCH_SCALE_PIZZAS must be a whole number of at least 1000" >&2; exit 1; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
OUT=$TARGET_DIR/bench/scale
BIN=$TARGET_DIR/release/pizza-api

export PIZZA_PG_DIR="${PIZZA_PG_SCALE_DIR:-/tmp/pizza-api-pg-scale}" PIZZA_PG_PORT="${PIZZA_PG_SCALE_PORT:-55437}"
export PIZZA_PG_DURABLE=1 PIZZA_PG_PORT_VAR=PIZZA_PG_SCALE_PORT

say() { echo "bench-scale: $*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}

PG_STARTED=0
WORK=$(mktemp -d /tmp/pizza-api-bench-scale.XXXXXX)
# As root the cluster runs as the postgres user; the service's SQLite file
# and logs live here too.
chmod 755 "$WORK"
cleanup() {
  local status=$?
  # lists.py stops every service it started, also when it fails.
  if [[ "$PG_STARTED" == 1 ]]; then
    scripts/pg-cluster.sh stop >/dev/null 2>&1 || say "warning: could not stop the scale bench PostgreSQL cluster"
  fi
  rm -rf "$WORK"
  [[ "$status" == 0 ]] || say "exit status $status: see the messages above"
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# shellcheck source=scripts/lib/need-wrk.sh
source scripts/lib/need-wrk.sh
need_wrk
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"

say "building the release binary"
cargo build --release --locked --quiet || die "cargo build --release failed"
rm -rf "$OUT"
mkdir -p "$OUT"
START_TIME=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

say "== sqlite ($PIZZAS pizzas)"
python3 scripts/bench/lists.py "$BIN" "$WORK" "$PIZZAS" "$OUT/sqlite.json" ||
  die "the SQLite run failed (logs: $WORK)"

PG_STARTED=1
started=0
scripts/pg-cluster.sh start || started=$?
((started != 3)) || die "the PostgreSQL port is taken (see above)"
if ((started != 0)); then
  [[ "${CI:-}" == true ]] && die "CI=true and PostgreSQL could not be started"
  say "!!! PostgreSQL could not be started (no server binaries?): the PostgreSQL half is SKIPPED !!!"
else
  say "== postgres ($PIZZAS pizzas)"
  PG_URL=$(scripts/pg-cluster.sh url)
  psql=$(command -v psql || printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
  "$psql" "$PG_URL" -v ON_ERROR_STOP=1 -qtA -c "CREATE DATABASE pizza_scale" >/dev/null ||
    die "could not create database pizza_scale"
  mapfile -t pg_env < <(scripts/pg-cluster.sh env | grep -v '^DB_NAME=')
  python3 scripts/bench/lists.py "$BIN" "$WORK" "$PIZZAS" "$OUT/postgres.json" "${pg_env[@]}" DB_NAME=pizza_scale ||
    die "the PostgreSQL run failed (logs: $WORK)"
fi

cat >"$OUT/meta.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "pizzas": $PIZZAS, "nproc": $(nproc),
 "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')",
 "loadavg_start": "$LOAD_START", "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "elapsed_seconds": $(($(date +%s) - START_TIME))}
EOF
python3 scripts/bench/scale_report.py "$OUT"

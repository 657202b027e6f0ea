#!/usr/bin/env bash
# Fault and flood tests of the HTTP listener and of the database handling,
# against the real release binary (`make test-faults`; CI runs it after
# `make test`):
#
#   scripts/test-faults.sh              every scenario
#   scripts/test-faults.sh NAME...      only those (e.g. stalled-bodies)
#
# The driver is Python, standard library only (scripts/faults/: driver.py
# runs, scenarios.py holds the scenarios, harness.py the service and database
# handling, probe.py and monitor.py timing clients and flood.py a token flood,
# each in its own process). Each scenario runs on a fresh database against a
# service on a free port of 127.0.0.1 (APP_HOST=127.0.0.1, WORKERS=8,
# BCRYPT_COST=10, HTTP_READ_TIMEOUT_MS=2000,
# HTTP_KEEPALIVE_TIMEOUT_MS=2000 unless the scenario says otherwise,
# LOG_LEVEL=warn, RLIMIT_NOFILE 4096 unless said otherwise), and prints one
# line, `PASS name/db (figures)` or `FAIL name/db: reasons (figures)`; the
# last line is `N passed, M failed`. Any failure exits non-zero. Every
# scenario also fails when the service exits on its own or logs a panic,
# and when it runs past its time budget (30-90 s). The whole run takes about
# 3 minutes after the build (each line ends with its scenario's time).
#
#  1. stalled-bodies (SQLite, PostgreSQL). 1,000 connections send the head of
#     POST /api/v1/pizzas with Content-Length: 500 and 10 body bytes, then
#     stall; 200 more send a request head one byte per second (1,200 stay
#     under the default MAX_CONNECTIONS, 2048: a connection mid-request is
#     never evicted, so past the cap a fresh client would rightly get 503
#     until they time out). Meanwhile a separate client process GETs
#     /livez and /api/v1/public/pizzas/1 alternately, a new connection each,
#     for 3 s. Asserts: every probe answer is 200, at least 20 of them, p99
#     <= 50 ms; every stalled connection is answered 408 (then closed) or
#     closed by the server within HTTP_READ_TIMEOUT_MS + 2 s of its first byte.
#  2. idle-keepalive-10k (SQLite). 10,000 keep-alive connections opened one
#     after another, each GET /livez, read the 200, then left idle
#     (HTTP_KEEPALIVE_TIMEOUT_MS=5000, so the cap is reached through
#     eviction rather than relieved by idle timeouts; MAX_CONNECTIONS at its
#     default, 2048;
#     the opening rate is reported); every 500
#     connections 5 timed GET /health on fresh connections. Asserts: every
#     answer 200; /health p99 <= 50 ms; VmHWM <= 128 MiB; Threads <=
#     MAX_CONNECTIONS + WORKERS + 32 at every 100th connection; at the end
#     pizza_api_http_connections_evicted_total > 0 and
#     pizza_api_http_connections_open <= MAX_CONNECTIONS; and
#     HTTP_KEEPALIVE_TIMEOUT_MS + 2 s after the last one, the open gauge <= 5
#     (the client keeps its sockets open: the server must close them). Opening
#     is bounded to 50 s.
#  3. fd-exhaustion (SQLite, PostgreSQL). The service runs with RLIMIT_NOFILE 256 (soft
#     and hard) and MAX_CONNECTIONS=1024; 1,000 non-blocking connects, each
#     sending GET /livez, are held 3 s, then all closed. Asserts: within 5 s
#     of closing, the process is alive and answers GET /livez 200, GET
#     /api/v1/public/pizzas/1 200, a client-credentials token (dev-client)
#     and POST /api/v1/pizzas 201 with it. Reports
#     pizza_api_http_accept_pauses_total and the service's peak fd count.
#  4. huge-content-length (SQLite, PostgreSQL). WORKERS + 1 connections send
#     GET /livez with Content-Length: 18446744073709551615 and 8 with
#     Content-Length: 99999999999, no body, all at once. Asserts: each is
#     answered 413 and closed, or closed, within 1 s (half the read timeout,
#     so a request dropped for silence cannot pass); afterwards the process is
#     alive, pizza_api_workers == WORKERS, pizza_api_worker_restarts_total ==
#     0, WORKERS concurrent GET /api/v1/public/pizzas/1 all answer 200, and
#     VmHWM < 64 MiB.
#
#
# The database faults (5-7) share one load: a service on a fresh PostgreSQL
# database, 8 client threads in the driver, each on a keep-alive connection
# of its own with a 5 s client timeout and 10 ms between its requests (4 GET
# /api/v1/public/pizzas/{id} for random existing ids, 4 POST
# /api/v1/pizzas with a dev-client token), and a monitor process
# (monitor.py) timing GET /livez and GET /health, new connections, every
# 20 ms; 3 s of normal load, the fault, 5 s more. Each asserts: no answer
# 500-599 other than 503; /livez p99 <= 20 ms over the whole run (a failed
# /livez counts as slower than any); every pizza answered 201 is in the
# database afterwards (read with psql). The server is stopped and restarted
# with pg_ctl as the cluster's owner (pg-cluster.sh's own `stop` deletes the
# cluster) and started with `pg-cluster.sh start`; the scenario leaves it
# running whatever happens.
#  5. pg-stopped (PostgreSQL). `pg_ctl stop -m fast`, 10 s, then start.
#     Asserts (times from when the stop/start command returned): /health
#     503 (body status unhealthy) within 1.0 s of the stop and 200 within
#     2.0 s of the start; a create answered 201 within 2.0 s of the start.
#  6. pg-frozen (PostgreSQL). Every process of the cluster (postmaster, then
#     its children) SIGSTOPped for 10 s, at a moment when at least 4 of the
#     load's requests are out (waited for at most 2 s), then SIGCONT (in a
#     finally, and again in this script's trap). Requests out when the freeze
#     begins or sent in its first 1.5 s (before the breaker opens) wait for
#     their statement's client-side deadline (DB_STATEMENT_TIMEOUT_MS, 5 s,
#     + 1 s), longer than the load's 5 s, so they may take 20 s and their
#     end is measured; from 1.5 s into the freeze until the resume a client
#     also sends a request on a new connection every 10 ms (GET and POST in
#     turn), as the load's threads may all be waiting. Asserts: /health 503
#     within 1.5 s of the freeze and 200 within 2.0 s of the resume; every
#     request that started more than 1.5 s after the freeze and before the
#     resume is answered 503 within 100 ms (p99 and max reported); at least
#     one request was held by the freeze (took 1 s or more: one out at the
#     signals may still finish before its backend stops, one sent just after
#     is held instead); every request caught by the freeze
#     (out at it, or sent in its first 1.5 s) was answered within the
#     deadline, its watchdog's tick (0.1 s) and 0.9 s of slack: 7.0 s, well
#     before the resume. Reports pizza_api_db_statements_cut_total.
#  7. pg-restart (PostgreSQL). `pg_ctl restart -m fast` once. Asserts: a
#     create answered 201 within 2.0 s after the command returned.
#  8. kill-9 (SQLite, PostgreSQL). 3 rounds on one database: 8 threads
#     create pizzas back to back (keep-alive, 5 s client timeout), the service is killed with
#     SIGKILL after 1-2 s (random) and started again on the same database.
#     Asserts: no 5xx but 503; every pizza answered 201 before the kill is
#     read 200 after the restart; on SQLite, PRAGMA integrity_check is ok
#     after each restart.
#  9. concurrent-writers (SQLite, PostgreSQL). 8 threads create pizzas back
#     to back for 10 s (client timeout 30 s: a slow answer still counts).
#     Asserts: no 5xx at all; pizzas in the database == answers 201 + the
#     3 seeded.
# 10. replicas-race (PostgreSQL). Three services launched together on one
#     empty database (own ports). Asserts: all answer /livez, then /health
#     200 (each within 60 s + 10 s); afterwards oauth_clients holds exactly
#     admin-client (bootstrap), dev-client and user-client (dev seed) once
#     each, users 2 rows, pizzas 3.
# 11. bcrypt-flood (SQLite and PostgreSQL). BCRYPT_COST=10. One token for
#     dev-client warms the credential cache; a reader process (monitor.py,
#     keep-alive) GETs /api/v1/public/pizzas/1 every 5 ms; after 1 s, a flood
#     process (flood.py) keeps 64 keep-alive connections sending token
#     requests for dev-client, each with another wrong secret, for 10 s,
#     while the driver asks for a token with the right secret every 0.5 s.
#     Asserts: reader p99 <= 10 ms during the flood, every reader answer
#     200; each right-secret request (at least 18) answered 200. Reports the
#     flood's 401 / 503 / 429 counts and the CPU time of the service (and of
#     the PostgreSQL cluster and the flood client).
# 12. missing-user-token (SQLite). An HS512 token signed with JWT_SECRET for
#     uid "987654" (no such user), role admin, scope "read write", aud
#     dev-client, valid for 600 s. Asserts: POST/PUT/DELETE on pizzas, GET
#     and POST /api/v1/clients and DELETE /api/v1/clients/x each answer 401
#     with error invalid_token; the same token for an existing admin gets
#     GET /api/v1/clients 200 (the minting is right).
#
# Scenario 2 runs on SQLite only: it loads the listener alone (connections,
# threads, memory), the same code whatever the database, and the database
# only answers the occasional GET /health; on PostgreSQL it would add the
# run's heaviest load again and test nothing new. Scenario 3 is cheap (about
# 4 s) and not database-neutral: the pool's new connections need file
# descriptors too (SQLite files, PostgreSQL sockets), so it runs on both.
# Scenarios 5-7 and 10 need a server to stop, freeze or share, hence
# PostgreSQL only; 12 is the same code on either database. Budgets: 90 s
# for 5, 6, 8 and 10, 60 s for 7, 9 and 11, 30 s for 12; requests per run
# are bounded by the durations above (the load threads pause 10 ms in 5-7).
#
# PostgreSQL is a private cluster (scripts/pg-cluster.sh) in this run's temp
# dir, on a port the kernel reports free, with a fresh database per service
# start. When it cannot be started its runs are SKIPPED, except under
# CI=true, where each is a FAIL. Only 127.0.0.1 is used; the trap stops the
# driver, every service it started (by PID, checked against the binary) and
# the cluster, and removes the temp dir, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { echo "test-faults: $*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is required"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BUILT="$TARGET_DIR/release/pizza-api"

# ---------------------------------------------------------------- cleanup
WORK="" DRIVER_PID="" PG_STARTED=0

cleanup() {
  local status=$?
  local pid i exe
  if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    # The driver stops its own services on SIGTERM.
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$DRIVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
    wait "$DRIVER_PID" 2>/dev/null || true
  fi
  if [[ -n "$WORK" && -f "$WORK/service.pids" ]]; then
    # Any service the driver could not stop: only PIDs still running our copy of the binary.
    while read -r pid; do
      exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
      if [[ "$exe" == "$WORK/pizza-api" ]]; then
        say "killing leftover service PID $pid"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$WORK/service.pids"
  fi
  if [[ "$PG_STARTED" == 1 ]]; then
    # pg-frozen SIGSTOPs the cluster and resumes it itself, even on failure;
    # should the driver have died in between, resume every process of the
    # cluster here (the postmaster and its children, by PID) before stopping it.
    pid=$(head -n 1 "$PIZZA_PG_DIR/data/postmaster.pid" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]]; then
      # shellcheck disable=SC2046
      kill -CONT "$pid" $(pgrep -P "$pid" 2>/dev/null) 2>/dev/null || true
    fi
    scripts/pg-cluster.sh stop >/dev/null 2>&1 || say "warning: could not stop the PostgreSQL cluster in $PIZZA_PG_DIR"
  fi
  if [[ -n "$WORK" ]]; then
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# ---------------------------------------------------------------- main
START=$(date +%s)
say "building the release binary"
cargo build --release --locked --quiet || die "cargo build --release --locked failed"
[[ -x "$BUILT" ]] || die "no binary at $BUILT after the build"

WORK=$(mktemp -d /tmp/pizza-api-faults.XXXXXX)
# As root the cluster runs as the postgres user, which must reach $WORK/pg.
chmod 711 "$WORK"
# A private copy: a rebuild during the run cannot swap the binary under test,
# and the trap recognises the services by it.
cp "$BUILT" "$WORK/pizza-api"
: >"$WORK/service.pids"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PG_ARGS=()
export PIZZA_PG_DIR="$WORK/pg"
PIZZA_PG_PORT=$(free_port)
export PIZZA_PG_PORT
# Set first: a start that fails half-way still leaves a directory to remove.
PG_STARTED=1
if scripts/pg-cluster.sh start; then
  PG_ARGS=(--postgres)
else
  reason="scripts/pg-cluster.sh start failed (PIZZA_PG_PORT=$PIZZA_PG_PORT)"
  if [[ "${CI:-}" == true ]]; then
    say "CI=true and PostgreSQL could not be started: its runs will FAIL"
  else
    say "!!! PostgreSQL could not be started: its runs are SKIPPED !!!"
  fi
  PG_ARGS=(--no-postgres "$reason")
fi

# In the background and waited for, so a signal reaches the trap at once.
python3 -B "$ROOT/scripts/faults/driver.py" --bin "$WORK/pizza-api" --work "$WORK" \
  --pid-file "$WORK/service.pids" "${PG_ARGS[@]}" "$@" &
DRIVER_PID=$!
status=0
wait "$DRIVER_PID" || status=$?
DRIVER_PID=""
say "done in $(($(date +%s) - START)) s"
exit "$status"

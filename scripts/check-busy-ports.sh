#!/usr/bin/env bash
# Shows that `make test` cannot be fooled by a port someone else holds: with a
# dummy listener on the test cluster's port (the default, 55433, unless
# PIZZA_PG_TEST_PORT says otherwise), `scripts/test.sh cluster` (make test's
# PostgreSQL start, and nothing else) must fail with one line naming
# PIZZA_PG_TEST_PORT; the same when only 127.0.0.2 is taken; and on another
# port it must work. Each cluster lives in a scratch directory of its own and
# is removed afterwards; only listeners this script started are stopped (by PID).
# The same for the replica's port (PIZZA_PG_TEST_REPLICA_PORT).
# Takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
unset TEST_DATABASE_URL TEST_DATABASE_SSLROOTCERT TEST_DATABASE_REPLICA

WORK=$(mktemp -d /tmp/pizza-api-busy-ports.XXXXXX)
# As root the cluster runs as the postgres user, who must reach its directory.
chmod 755 "$WORK"
# Listener PIDs go to a file: `listen` runs in a command substitution, whose
# variables the script never sees.
PIDS="$WORK/listener-pids"
: >"$PIDS"
cleanup() {
  local pid
  while read -r pid; do
    kill "$pid" 2>/dev/null || true
  done <"$PIDS"
  PIZZA_PG_DIR="$WORK/pg" scripts/pg-cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "check-busy-ports: $*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}

# listen ADDRESS PORT: a dummy listener (PORT 0: any free one); prints the
# port once it listens, or nothing when ADDRESS:PORT is already taken.
listen() {
  local out="$WORK/listener.$#.$RANDOM"
  python3 -u - "$1" "$2" >"$out" 2>/dev/null <<'PY' &
import socket, sys, time
s = socket.socket()
# As servers do (PostgreSQL too): connections of a moment ago, still in
# TIME_WAIT, must not make a free port look taken.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    print("busy")
    sys.exit(0)
s.listen()
print(s.getsockname()[1])
time.sleep(600)
PY
  echo "$!" >>"$PIDS"
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$out" ]] && break
    sleep 0.1
  done
  local port
  port=$(head -n 1 "$out")
  [[ "$port" == busy ]] && return 0
  echo "$port"
}

# expect_taken PORT WHAT: make test's PostgreSQL start must fail in one line.
expect_taken() {
  local port=$1 what=$2 status=0
  PIZZA_PG_TEST_PORT=$port PIZZA_PG_TEST_DIR="$WORK/pg" scripts/test.sh cluster >"$WORK/out" 2>&1 || status=$?
  ((status != 0)) || fail "$what: scripts/test.sh cluster succeeded on a port another process holds"
  grep -q "set PIZZA_PG_TEST_PORT to a free port" "$WORK/out" ||
    { cat "$WORK/out" >&2; fail "$what: no line saying to set PIZZA_PG_TEST_PORT"; }
  say "ok: $what: $(grep -m 1 PIZZA_PG_TEST_PORT "$WORK/out")"
}

# 1. The default test port (or the one configured), held by a dummy listener
#    unless something already holds it.
DEFAULT_PORT=${PIZZA_PG_TEST_PORT:-55433}
held=$(listen 127.0.0.1 "$DEFAULT_PORT")
holder="already held by another process"
[[ -z "$held" ]] || holder="held by a dummy listener"
expect_taken "$DEFAULT_PORT" "127.0.0.1:$DEFAULT_PORT $holder"

# 2. Only 127.0.0.2 taken: a server that bound 127.0.0.1 alone would pass a
#    naive check.
ONLY2=$(listen 127.0.0.2 0)
[[ -n "$ONLY2" ]] || fail "could not listen on 127.0.0.2"
expect_taken "$ONLY2" "127.0.0.2:$ONLY2 held by a dummy listener"

# 3. Another port: the start works and owns both addresses.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
FREE=$(free_port)
FREE_REPLICA=$(free_port)
if ! PIZZA_PG_TEST_PORT=$FREE PIZZA_PG_TEST_REPLICA_PORT=$FREE_REPLICA PIZZA_PG_TEST_DIR="$WORK/pg" \
  scripts/test.sh cluster >"$WORK/out" 2>&1; then
  if grep -q "server binaries not found" "$WORK/out" && [[ "${CI:-}" != true ]]; then
    say "!!! SKIPPED the start on a free port: no PostgreSQL server binaries !!!"
    exit 0
  fi
  cat "$WORK/out" >&2
  fail "scripts/test.sh cluster failed on port $FREE (free a moment ago)"
fi
grep -q "running on 127.0.0.1:$FREE and 127.0.0.2:$FREE" "$WORK/out" ||
  { cat "$WORK/out" >&2; fail "no 'running on' line for port $FREE"; }
grep -q "replica running on 127.0.0.1:$FREE_REPLICA" "$WORK/out" ||
  { cat "$WORK/out" >&2; fail "no 'replica running on' line for port $FREE_REPLICA"; }
say "ok: another port ($FREE, replica $FREE_REPLICA): the cluster and its replica started, owned their addresses, and were removed"

# 4. The replica's port taken: the start fails in one line naming its variable.
REPLICA_HELD=$(listen 127.0.0.1 0)
[[ -n "$REPLICA_HELD" ]] || fail "could not listen on 127.0.0.1"
status=0
PIZZA_PG_TEST_PORT=$FREE PIZZA_PG_TEST_REPLICA_PORT=$REPLICA_HELD PIZZA_PG_TEST_DIR="$WORK/pg" \
  scripts/test.sh cluster >"$WORK/out" 2>&1 || status=$?
((status != 0)) || fail "the replica started on port $REPLICA_HELD, which a dummy listener holds"
grep -q "set PIZZA_PG_TEST_REPLICA_PORT to a free port" "$WORK/out" ||
  { cat "$WORK/out" >&2; fail "no line saying to set PIZZA_PG_TEST_REPLICA_PORT"; }
say "ok: the replica's port held by a dummy listener: $(grep -m 1 PIZZA_PG_TEST_REPLICA_PORT "$WORK/out")"

#!/usr/bin/env bash
# End-to-end walk-through of pizza-api over HTTP, as a user would do it with curl.
#
#   scripts/test-api.sh                         # SQLite, a fresh file
#   DB_DRIVER=postgres DB_PASSWORD=... \
#     [DB_HOST=... DB_PORT=... DB_USER=...] scripts/test-api.sh
#                                               # PostgreSQL: a fresh database on that server
#
# Builds the release binary, starts it on a free port with a fresh database,
# waits for /health, then walks through tokens, listing, creating, updating
# and deleting pizzas as the admin and as a regular user. Prints a check mark
# per step; on the first failure prints the server log and exits non-zero.
# Only the server this script started is stopped (by its PID), and only the
# database it created is removed. Needs bash and curl; uses jq when present.
#
# PIZZA_API_BIN=path skips the build and runs that binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."

DRIVER="${DB_DRIVER:-sqlite}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pizza-api-e2e.XXXXXX")"
LOG="$WORK/server.log"
SERVER_PID=""
PG_DB=""
STEP=0

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n "$PG_DB" ]]; then
    PGPASSWORD="$DB_PASSWORD" psql -q -h "${DB_HOST:-localhost}" -p "${DB_PORT:-5432}" -U "${DB_USER:-postgres}" \
      -d postgres -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "✗ step $STEP: $*" >&2
  if [[ -f "$LOG" ]]; then
    echo "--- server log ---" >&2
    cat "$LOG" >&2
    echo "--- end of server log ---" >&2
  fi
  exit 1
}

pass() { echo "✓ $*"; }

# json_get FIELD: a top-level string or number field of the JSON on stdin.
json_get() {
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg f "$1" '.[$f] // empty'
  else
    tr -d '\n' | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" | head -n 1
  fi
}

# json_count: the number of objects in the JSON array on stdin.
json_count() {
  if command -v jq >/dev/null 2>&1; then
    jq 'length'
  else
    tr -d '\n' | grep -o '"id":' | wc -l | tr -d ' '
  fi
}

# request METHOD PATH [curl args...]: sets STATUS and BODY.
request() {
  local method="$1" path="$2"
  shift 2
  local out
  out=$(curl -sS -X "$method" -w '\n%{http_code}' "$BASE$path" "$@") || fail "curl $method $path failed"
  STATUS="${out##*$'\n'}"
  BODY="${out%$'\n'*}"
}

expect_status() {
  [[ "$STATUS" == "$1" ]] || fail "expected HTTP $1, got $STATUS: $BODY"
}

step() { STEP=$((STEP + 1)); }

# --- build and start -------------------------------------------------------

BIN="${PIZZA_API_BIN:-}"
if [[ -z "$BIN" ]]; then
  echo "building the release binary..."
  cargo build --release --locked --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/pizza-api"
fi

server_env=(APP_HOST=127.0.0.1 APP_PORT=0 LOG_LEVEL=info)
case "$DRIVER" in
  sqlite)
    server_env+=(DB_DRIVER=sqlite "DB_PATH=$WORK/pizza.sqlite")
    ;;
  postgres | postgresql)
    [[ -n "${DB_PASSWORD:-}" ]] || { echo "DB_PASSWORD is required for PostgreSQL" >&2; exit 2; }
    command -v psql >/dev/null 2>&1 || { echo "psql is needed to create the test database" >&2; exit 2; }
    PG_DB="pizza_api_e2e_$$"
    PGPASSWORD="$DB_PASSWORD" psql -q -h "${DB_HOST:-localhost}" -p "${DB_PORT:-5432}" -U "${DB_USER:-postgres}" \
      -d postgres -c "CREATE DATABASE \"$PG_DB\"" >/dev/null || { echo "cannot create database $PG_DB" >&2; exit 1; }
    server_env+=(DB_DRIVER=postgres "DB_NAME=$PG_DB")
    ;;
  *) echo "DB_DRIVER must be sqlite or postgres, not $DRIVER" >&2; exit 2 ;;
esac

# `env` keeps the caller's DB_HOST, DB_PASSWORD... and adds ours on top.
env "${server_env[@]}" "$BIN" >"$LOG" 2>&1 &
SERVER_PID=$!

ADDR=""
for _ in $(seq 1 300); do
  ADDR=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$LOG" | head -n 1)
  [[ -n "$ADDR" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during start-up"
  sleep 0.1
done
[[ -n "$ADDR" ]] || fail "the server did not start listening within 30 s"
BASE="http://$ADDR"

step
for _ in $(seq 1 100); do
  request GET /health
  [[ "$STATUS" == 200 ]] && break
  sleep 0.1
done
expect_status 200
pass "server healthy at $BASE ($(json_get db_driver <<<"$BODY"))"

# --- as the admin (dev-client) ---------------------------------------------

step
request POST /api/v1/oauth/token -d grant_type=client_credentials -d client_id=dev-client -d client_secret=dev-secret-123
expect_status 200
ADMIN=$(json_get access_token <<<"$BODY")
[[ -n "$ADMIN" ]] || fail "no access_token in $BODY"
pass "token for dev-client"

step
request GET /api/v1/public/pizzas
expect_status 200
BEFORE=$(json_count <<<"$BODY")
pass "list pizzas ($BEFORE)"

step
request POST /api/v1/pizzas -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"name":"Test Pizza","description":"From test-api.sh","ingredients":["Tomato","Cheese"],"price":19.99}'
expect_status 201
ID=$(json_get id <<<"$BODY")
[[ "$ID" =~ ^[0-9]+$ ]] || fail "no id in $BODY"
pass "create pizza $ID"

step
request GET /api/v1/public/pizzas
expect_status 200
AFTER=$(json_count <<<"$BODY")
[[ "$AFTER" -eq $((BEFORE + 1)) ]] || fail "the list has $AFTER pizzas, expected $((BEFORE + 1))"
pass "list grew to $AFTER"

step
request GET "/api/v1/public/pizzas/$ID"
expect_status 200
[[ "$(json_get name <<<"$BODY")" == "Test Pizza" ]] || fail "unexpected pizza: $BODY"
pass "get pizza $ID by ID"

step
request PUT "/api/v1/pizzas/$ID" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"name":"Updated Pizza","description":"Changed","ingredients":["Tomato"],"price":24.99}'
expect_status 200
pass "update pizza $ID"

step
request GET "/api/v1/public/pizzas/$ID"
expect_status 200
[[ "$(json_get name <<<"$BODY")" == "Updated Pizza" ]] || fail "name not updated: $BODY"
[[ "$(json_get price <<<"$BODY")" == "24.99" ]] || fail "price not updated: $BODY"
pass "name and price updated (24.99)"

step
request DELETE "/api/v1/pizzas/$ID" -H "Authorization: Bearer $ADMIN"
expect_status 204
pass "delete pizza $ID"

step
request GET "/api/v1/public/pizzas/$ID"
expect_status 404
pass "pizza $ID is gone (404)"

# --- as a regular user (user-client) ---------------------------------------

step
request POST /api/v1/oauth/token -u user-client:user-secret-123 -d grant_type=client_credentials
expect_status 200
USER_TOKEN=$(json_get access_token <<<"$BODY")
[[ -n "$USER_TOKEN" ]] || fail "no access_token in $BODY"
pass "token for user-client (HTTP Basic)"

step
request POST /api/v1/pizzas -H "Authorization: Bearer $USER_TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"User Pizza","price":9.5}'
expect_status 201
OWN=$(json_get id <<<"$BODY")
[[ "$(json_get created_by <<<"$BODY")" == 2 ]] || fail "expected created_by 2: $BODY"
pass "create pizza $OWN as the user"

step
request PUT "/api/v1/pizzas/$OWN" -H "Authorization: Bearer $USER_TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"User Pizza Deluxe","price":10.5}'
expect_status 200
pass "the user updates their own pizza"

step
request PUT /api/v1/pizzas/1 -H "Authorization: Bearer $USER_TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"Not Mine","price":1}'
expect_status 403
pass "the user may not update pizza 1 (403)"

step
request DELETE "/api/v1/pizzas/$OWN" -H "Authorization: Bearer $USER_TOKEN"
expect_status 204
pass "the user deletes their own pizza"

step
request GET "/api/v1/public/pizzas/$OWN"
expect_status 404
pass "pizza $OWN is gone (404)"

echo "all $STEP steps passed on $DRIVER"

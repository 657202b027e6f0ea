#!/usr/bin/env bash
# The whole test suite on both databases:
#   scripts/test.sh        cargo test, then on SQLite and on PostgreSQL the
#                          end-to-end walk-through (scripts/test-api.sh), the
#                          OpenAPI conformance run (scripts/openapi-check.sh) and
#                          the API page in a browser (scripts/browser-check.sh)
#   scripts/test.sh api    only the end-to-end walk-through, on both
#   scripts/test.sh cluster  only start the private PostgreSQL and stop it again
#                          (scripts/check-busy-ports.sh checks that start)
#
# PostgreSQL is a private cluster (scripts/pg-cluster.sh) on its own port,
# started here and stopped and deleted afterwards, whatever happens; or the
# server of TEST_DATABASE_URL (postgres://user:password@host:port/db) when set
# (with TEST_DATABASE_SSLROOTCERT, the CA of its TLS certificate, if any).
#
# Settings (environment), each documented in the README's Testing section:
#   PIZZA_PG_TEST_PORT  port of the private cluster, on 127.0.0.1 and 127.0.0.2
#                       (default 55433); when something else holds it, start-up
#                       fails with one line naming this variable
#   PIZZA_PG_TEST_DIR   where the private cluster lives (default /tmp/pizza-api-pg-test)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-all}"

export PIZZA_PG_DIR="${PIZZA_PG_TEST_DIR:-/tmp/pizza-api-pg-test}"
export PIZZA_PG_PORT="${PIZZA_PG_TEST_PORT:-55433}"
export PIZZA_PG_PORT_VAR=PIZZA_PG_TEST_PORT

if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
  cleanup() { scripts/pg-cluster.sh stop || true; }
  trap cleanup EXIT
  started=0
  scripts/pg-cluster.sh start || started=$?
  if ((started == 3)); then
    # Another server holds the port: its one-line message says what to set.
    exit 1
  elif ((started == 0)); then
    TEST_DATABASE_URL="$(scripts/pg-cluster.sh url)"
    TEST_DATABASE_SSLROOTCERT="$(scripts/pg-cluster.sh ca || true)"
    export TEST_DATABASE_URL TEST_DATABASE_SSLROOTCERT
  elif [[ "${CI:-}" == "true" ]]; then
    echo "test: CI=true and PostgreSQL could not be started" >&2
    exit 1
  else
    echo "test: !!! no PostgreSQL: the PostgreSQL half of every test will be SKIPPED !!!" >&2
  fi
fi

if [[ "$MODE" == cluster ]]; then
  [[ -n "${TEST_DATABASE_URL:-}" ]] || { echo "test: no PostgreSQL started" >&2; exit 1; }
  exit 0
fi

# Runs "$@" once on SQLite and once on the test PostgreSQL (DB_* from the URL).
on_both_databases() {
  DB_DRIVER=sqlite "$@"
  [[ -n "${TEST_DATABASE_URL:-}" ]] || return 0
  # postgres://user:password@host:port/db
  local re='^postgres(ql)?://([^:@/]+):([^@/]*)@([^:/]+):?([0-9]*)/?.*$'
  [[ "$TEST_DATABASE_URL" =~ $re ]] || { echo "test: cannot read TEST_DATABASE_URL" >&2; exit 1; }
  DB_DRIVER=postgres DB_USER="${BASH_REMATCH[2]}" DB_PASSWORD="${BASH_REMATCH[3]}" \
    DB_HOST="${BASH_REMATCH[4]}" DB_PORT="${BASH_REMATCH[5]:-5432}" "$@"
}

if [[ "$MODE" == all ]]; then
  cargo test --locked -- --test-threads="${TEST_THREADS:-4}"
  # The patched listener's own unit tests (framing, limits).
  cargo test --locked -p tiny_http
fi

cargo build --release --locked --quiet
export PIZZA_API_BIN="${CARGO_TARGET_DIR:-target}/release/pizza-api"
echo "== end-to-end walk-through (scripts/test-api.sh)"
on_both_databases scripts/test-api.sh

if [[ "$MODE" == all ]]; then
  echo "== OpenAPI conformance (scripts/openapi-check.sh)"
  OPENAPI_CHECK_MAX_EXAMPLES="${OPENAPI_CHECK_MAX_EXAMPLES:-25}" on_both_databases scripts/openapi-check.sh
  echo "== the API page in a browser (scripts/browser-check.sh)"
  on_both_databases scripts/browser-check.sh
  # The embedded Swagger UI must not make the image heavy.
  size=$(stat -c %s "$PIZZA_API_BIN")
  ((size <= 10 * 1024 * 1024)) || { echo "test: $PIZZA_API_BIN is $size bytes, over 10 MiB" >&2; exit 1; }
  echo "== release binary: $size bytes (at most 10 MiB)"
fi

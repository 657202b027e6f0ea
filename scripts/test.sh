#!/usr/bin/env bash
# Runs the whole test suite on both databases: starts a private PostgreSQL
# cluster (scripts/pg-cluster.sh) on its own port, points the tests at it,
# and stops and deletes it afterwards, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIZZA_PG_DIR="${PIZZA_PG_TEST_DIR:-/tmp/pizza-api-pg-test}"
export PIZZA_PG_PORT="${PIZZA_PG_TEST_PORT:-55433}"

if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
  cleanup() { scripts/pg-cluster.sh stop || true; }
  trap cleanup EXIT
  if scripts/pg-cluster.sh start; then
    TEST_DATABASE_URL="$(scripts/pg-cluster.sh url)"
    export TEST_DATABASE_URL
  elif [[ "${CI:-}" == "true" ]]; then
    echo "test: CI=true and PostgreSQL could not be started" >&2
    exit 1
  else
    echo "test: !!! no PostgreSQL: the PostgreSQL half of every test will be SKIPPED !!!" >&2
  fi
fi

cargo test --locked -- --test-threads="${TEST_THREADS:-4}"

#!/usr/bin/env bash
# The API page (GET /docs) in a real browser: starts the release binary on
# 127.0.0.1 (a free port it picks itself) with a fresh database, and drives the
# page with Debian's chromium, headless, through playwright-core
# (scripts/browser/docs-page.js: every operation listed, "Try it out" on the
# public list, authorize as dev-client, create a pizza from the page).
#
#   scripts/browser-check.sh                      # SQLite, a fresh file
#   DB_DRIVER=postgres DB_PASSWORD=... [DB_HOST=... DB_PORT=... DB_USER=...] scripts/browser-check.sh
#
# Installs what it needs: Debian's chromium (apt-get, as root) when
# /usr/bin/chromium is missing, and playwright-core from npm, the version and
# hash pinned in scripts/browser/package-lock.json (`npm ci`), into
# $CARGO_TARGET_DIR/browser-check. Without a way to get either it skips
# loudly, except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="${PIZZA_API_BIN:-$TARGET_DIR/release/pizza-api}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
TOOLS="$TARGET_DIR/browser-check"

say() { echo "browser-check: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }
skip() {
  [[ "${CI:-}" == true ]] && die "CI=true and $*"
  say "!!! SKIPPED: $* !!!"
  exit 0
}

if [[ ! -x "$CHROMIUM" ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >&2 ||
      skip "chromium could not be installed"
  else
    skip "no $CHROMIUM (install Debian's chromium, or set CHROMIUM)"
  fi
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || skip "node and npm are needed"
# Reinstalled whenever the lockfile changes (npm ci checks each package's hash);
# runs that overlap take turns.
mkdir -p "$TARGET_DIR"
exec 8>"$TARGET_DIR/.browser-check.lock"
flock 8
if ! cmp -s scripts/browser/package-lock.json "$TOOLS/package-lock.json" || [[ ! -d "$TOOLS/node_modules/playwright-core" ]]; then
  say "installing playwright-core (scripts/browser/package-lock.json) into $TOOLS"
  rm -rf "$TOOLS"
  mkdir -p "$TOOLS"
  cp scripts/browser/package.json scripts/browser/package-lock.json "$TOOLS/"
  (cd "$TOOLS" && npm ci --no-audit --no-fund --silent) >&2 || { rm -rf "$TOOLS"; skip "playwright-core could not be installed from npm"; }
fi
exec 8>&-
[[ -x "$BIN" ]] || cargo build --release --locked --quiet

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pizza-api-browser.XXXXXX")
SERVER_PID="" PG_DB=""
pg_admin() {
  PGPASSWORD="$DB_PASSWORD" psql -q -X -h "${DB_HOST:-localhost}" -p "${DB_PORT:-5432}" -U "${DB_USER:-postgres}" -d postgres "$@"
}
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  [[ -z "$PG_DB" ]] || pg_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

DRIVER="${DB_DRIVER:-sqlite}"
case "$DRIVER" in
  sqlite) DB_ENV=(DB_DRIVER=sqlite "DB_PATH=$WORK/pizza.sqlite") ;;
  postgres | postgresql)
    PG_DB="pizza_api_browser_$$"
    pg_admin -c "CREATE DATABASE \"$PG_DB\"" >/dev/null || die "cannot create database $PG_DB"
    DB_ENV=(DB_DRIVER="$DRIVER" DB_HOST="${DB_HOST:-localhost}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
      DB_PASSWORD="$DB_PASSWORD" DB_NAME="$PG_DB")
    ;;
  *) die "DB_DRIVER must be sqlite or postgres, not $DRIVER" ;;
esac

(cd "$WORK" && exec env -i PATH="$PATH" APP_ENV=development APP_HOST=127.0.0.1 APP_PORT=0 BCRYPT_COST=4 \
  "${DB_ENV[@]}" "$BIN") >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 300); do
  PORT=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$WORK/server.log" | head -n 1 | grep -o '[0-9]*$' || true)
  [[ -n "$PORT" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited before listening"; }
  sleep 0.1
done
[[ -n "$PORT" ]] || die "the server did not listen within 30 s"
say "$DRIVER: driving http://127.0.0.1:$PORT/docs in $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

NODE_PATH="$TOOLS/node_modules" CHROMIUM="$CHROMIUM" timeout 180 node scripts/browser/docs-page.js "http://127.0.0.1:$PORT" ||
  { tail -n 20 "$WORK/server.log" >&2; die "the page did not work in the browser ($DRIVER)"; }
if grep -qF -- "dev-secret-123" "$WORK/server.log"; then
  die "the server log holds dev-client's secret"
fi
say "OK ($DRIVER)"

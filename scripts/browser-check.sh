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

# shellcheck source=scripts/lib/fresh-server.sh
source scripts/lib/fresh-server.sh
start_fresh_server browser
DRIVER="${DB_DRIVER:-sqlite}"
say "$DRIVER: driving http://127.0.0.1:$PORT/docs in $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

NODE_PATH="$TOOLS/node_modules" CHROMIUM="$CHROMIUM" timeout 180 node scripts/browser/docs-page.js "http://127.0.0.1:$PORT" ||
  { tail -n 20 "$WORK/server.log" >&2; die "the page did not work in the browser ($DRIVER)"; }
if grep -qF -- "dev-secret-123" "$WORK/server.log"; then
  die "the server log holds dev-client's secret"
fi
say "OK ($DRIVER)"

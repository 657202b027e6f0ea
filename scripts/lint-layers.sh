#!/usr/bin/env bash
# The layering rules of ARCHITECTURE.md that a grep can check (make lint):
#   - only src/db/ matches on the database driver (Db::Sqlite, Db::Postgres);
#   - only src/http/ names tiny_http;
#   - only main.rs, cli.rs and app.rs import the start-up module (crate::app).
# Prints each offending line and exits 1 when any rule is broken.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
check() {
  local rule="$1" pattern="$2" allowed="$3" found
  found="$(grep -rnE "$pattern" src --include='*.rs' | grep -vE "^($allowed)" || true)"
  if [[ -n "$found" ]]; then
    echo "lint-layers: $rule:" >&2
    echo "$found" >&2
    status=1
  fi
}

check "only src/db/ matches on the driver" 'Db::(Sqlite|Postgres)' 'src/db/'
check "only src/http/ names tiny_http" 'tiny_http' 'src/http/'
check "only main, cli and app import the start-up module" 'crate::app\b|pizza_api::app\b' 'src/(main|cli|app)\.rs:'
[[ $status == 0 ]] && echo "lint-layers: ok"
exit $status

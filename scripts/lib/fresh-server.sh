# shellcheck shell=bash
# Sourced by the checks that drive a real server from outside
# (scripts/browser-check.sh, scripts/python-client-check.sh):
#
#   start_fresh_server NAME
#
# starts "$BIN" on 127.0.0.1 with a free port (APP_PORT=0), the development
# seed and BCRYPT_COST=4, on a fresh database: a SQLite file in a temporary
# directory, or with DB_DRIVER=postgres a new database pizza_api_NAME_<pid> on
# the server of the DB_* variables. Sets WORK (the temporary directory, with
# server.log), SERVER_PID and PORT; on exit the server is stopped, the
# database dropped and WORK removed. Needs `die` and BIN from the caller.

WORK="" SERVER_PID="" PG_DB="" PORT=""

pg_admin() {
  PGPASSWORD="$DB_PASSWORD" psql -q -X -h "${DB_HOST:-localhost}" -p "${DB_PORT:-5432}" -U "${DB_USER:-postgres}" -d postgres "$@"
}

stop_fresh_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  [[ -z "$PG_DB" ]] || pg_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  [[ -z "$WORK" ]] || rm -rf "$WORK"
}

start_fresh_server() {
  local name="$1" driver="${DB_DRIVER:-sqlite}" db_env
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/pizza-api-$name.XXXXXX")
  trap stop_fresh_server EXIT
  case "$driver" in
    sqlite) db_env=(DB_DRIVER=sqlite "DB_PATH=$WORK/pizza.sqlite") ;;
    postgres | postgresql)
      PG_DB="pizza_api_${name}_$$"
      pg_admin -c "CREATE DATABASE \"$PG_DB\"" >/dev/null || die "cannot create database $PG_DB"
      db_env=(DB_DRIVER="$driver" DB_HOST="${DB_HOST:-localhost}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
        DB_PASSWORD="$DB_PASSWORD" DB_NAME="$PG_DB")
      ;;
    *) die "DB_DRIVER must be sqlite or postgres, not $driver" ;;
  esac
  (cd "$WORK" && exec env -i PATH="$PATH" APP_ENV=development APP_HOST=127.0.0.1 APP_PORT=0 BCRYPT_COST=4 \
    "${db_env[@]}" "$BIN") >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  local _
  for _ in $(seq 1 300); do
    PORT=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$WORK/server.log" | head -n 1 | grep -o '[0-9]*$' || true)
    [[ -n "$PORT" ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited before listening"; }
    sleep 0.1
  done
  die "the server did not listen within 30 s"
}

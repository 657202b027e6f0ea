#!/usr/bin/env bash
# A private, throwaway PostgreSQL cluster for tests, benchmarks and local runs:
# its own data directory and port, password (SCRAM) authentication, nothing
# shared with a system PostgreSQL.
#
#   scripts/pg-cluster.sh start    initialise (first time) and start; idempotent;
#                                  exit status 3 when the port is someone else's
#   scripts/pg-cluster.sh stop     stop and delete the cluster
#   scripts/pg-cluster.sh status   exit 0 when running
#   scripts/pg-cluster.sh url      admin URL (postgres://postgres:...@127.0.0.1:PORT/postgres)
#   scripts/pg-cluster.sh env      DB_* lines for running pizza-api against it
#   scripts/pg-cluster.sh ca       path of the CA certificate the server's TLS
#                                  certificate is signed with (for DB_SSLROOTCERT)
#   scripts/pg-cluster.sh replica-start    a streaming replica of the cluster
#                                  (pg_basebackup -R, first time) in DIR/replica on
#                                  127.0.0.1:REPLICA_PORT, started; idempotent;
#                                  exit status 3 when that port is someone else's
#   scripts/pg-cluster.sh replica-stop     stop the replica, keeping its data
#                                  (replica-start starts it again, and it catches up)
#   scripts/pg-cluster.sh replica-address  127.0.0.1:REPLICA_PORT (for DB_READ_HOSTS)
#
# The primary is made with initdb's defaults, which allow a replica:
# wal_level=replica, max_wal_senders=10, and pg_hba.conf's `host replication
# all 127.0.0.1/32` line (password authentication like every other login).
# The replica is a hot standby with the same password, TLS certificate and
# max_connections as the primary; `stop` stops and deletes it with the rest.
#
# The server accepts TLS and plain connections alike: its certificate (for
# localhost and 127.0.0.1) comes from a throwaway CA made with openssl,
# when openssl is there. It also listens on 127.0.0.2, an address the
# certificate does not name, so tests can check host-name verification.
#
# Settings (environment):
#   PIZZA_PG_DIR      where the cluster lives      (default /tmp/pizza-api-pg)
#   PIZZA_PG_PORT     TCP port on 127.0.0.1        (default 55432)
#   PIZZA_PG_DURABLE  1 keeps fsync on (benchmarks); default off, for fast tests
#   PIZZA_PG_PORT_VAR the variable a caller sets to choose the port, named in
#                     the error when the port is taken (default PIZZA_PG_PORT;
#                     scripts/test.sh says PIZZA_PG_TEST_PORT, and so on)
#   PIZZA_PG_REPLICA_PORT      the replica's port on 127.0.0.1 (default PORT + 10)
#   PIZZA_PG_REPLICA_PORT_VAR  the variable named when that port is taken
#                              (default PIZZA_PG_REPLICA_PORT)
#
# `start` reports success only for a server it owns: before starting, nothing
# may answer on 127.0.0.1:PORT or 127.0.0.2:PORT; after starting (or when it
# finds the cluster already running), the server answering on each address
# must report this cluster's data directory. Otherwise it fails with one line
# naming the variable to set.
#
# PostgreSQL server binaries are looked up in PG_BIN, then PATH, then
# /usr/lib/postgresql/<newest>/bin; when none exist and this runs as root on
# Debian, the postgresql package is installed. initdb refuses to run as root,
# so as root the cluster runs as the `postgres` user.
set -euo pipefail

DIR="${PIZZA_PG_DIR:-/tmp/pizza-api-pg}"
PORT="${PIZZA_PG_PORT:-55432}"
PORT_VAR="${PIZZA_PG_PORT_VAR:-PIZZA_PG_PORT}"
ADDRESSES=(127.0.0.1 127.0.0.2)
DATA="$DIR/data"
PWFILE="$DIR/password"
LOG="$DIR/server.log"
REPLICA_PORT="${PIZZA_PG_REPLICA_PORT:-$((PORT + 10))}"
REPLICA_PORT_VAR="${PIZZA_PG_REPLICA_PORT_VAR:-PIZZA_PG_REPLICA_PORT}"
REPLICA_DIR="$DIR/replica"
REPLICA_DATA="$REPLICA_DIR/data"
REPLICA_LOG="$REPLICA_DIR/server.log"

say() { echo "pg-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

find_bin() {
  local candidate
  if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then echo "$PG_BIN"; return 0; fi
  # Resolve symlinks: psql and pg_ctl live beside the real initdb.
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return 0; fi
  candidate=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$candidate" && -x "$candidate/initdb" ]]; then echo "$candidate"; return 0; fi
  return 1
}

install_postgres() {
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
  say "no PostgreSQL server binaries found; installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends postgresql >&2
}

# Runs a command as the cluster's owner.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

is_running() {
  [[ -f "$DATA/postmaster.pid" ]] || return 1
  local bin; bin=$(find_bin) || return 1
  as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

url() {
  [[ -f "$PWFILE" ]] || die "no cluster in $DIR (run: $0 start)"
  # The password is generated as hex, so it needs no escaping in a URL.
  echo "postgres://postgres:$(cat "$PWFILE")@127.0.0.1:$PORT/postgres"
}

# Makes a throwaway CA and a server certificate for localhost/127.0.0.1 in
# $DIR, unless they exist. Prints the server's TLS settings (none without openssl).
tls_settings() {
  if [[ ! -f "$DIR/server.crt" ]]; then
    command -v openssl >/dev/null 2>&1 || return 0
    local ext="$DIR/server.ext"
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$ext"
    {
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=pizza-api test CA" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
          -keyout "$DIR/server.key" -out "$DIR/server.csr" &&
        openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
          -days 3650 -extfile "$ext" -out "$DIR/server.crt"
    } >"$DIR/openssl.log" 2>&1 || { cat "$DIR/openssl.log" >&2; die "could not make the TLS certificates"; }
    chmod 600 "$DIR/server.key"
    chmod 644 "$DIR/ca.crt" "$DIR/server.crt"
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$DIR/server.key" "$DIR/server.crt"; fi
  fi
  echo "-c ssl=on -c ssl_cert_file=$DIR/server.crt -c ssl_key_file=$DIR/server.key"
}

# Whether anything accepts TCP connections on ADDRESS:PORT (the port is the
# cluster's unless a second argument names another).
answers_on() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "${2:-$PORT}" 2>/dev/null
}

# The data directory of the server answering on ADDRESS:PORT (or the port of
# the second argument), asked with this cluster's password; empty when it does
# not answer or refuses the password.
data_directory_on() {
  local bin; bin=$(find_bin) || return 0
  PGPASSWORD=$(cat "$PWFILE" 2>/dev/null) PGCONNECT_TIMEOUT=5 "$bin/psql" -X -q -w -h "$1" -p "${2:-$PORT}" \
    -U postgres -d postgres -tAc "SHOW data_directory" 2>/dev/null || true
}

# Exit status 3: the port belongs to someone else (callers fail instead of
# skipping PostgreSQL, which is what they do when it cannot start at all).
port_taken() {
  say "port $PORT is not this cluster's: $1; set $PORT_VAR to a free port"
  exit 3
}

# Fails unless every address answers with this cluster's data directory and
# postmaster.pid names the port asked for.
check_ownership() {
  local want address got pid_port
  want=$(readlink -f "$DATA")
  pid_port=$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)
  if [[ "$pid_port" != "$PORT" ]]; then
    say "the cluster in $DIR runs on port ${pid_port:-?}, not $PORT; run '$0 stop' or set $PORT_VAR=${pid_port:-<port>}"
    exit 3
  fi
  for address in "${ADDRESSES[@]}"; do
    got=$(data_directory_on "$address")
    [[ -n "$got" && "$(readlink -f "$got")" == "$want" ]] ||
      port_taken "another server answers on $address:$PORT, not the cluster in $DIR"
  done
}

# The settings both servers start with: a hot standby needs at least the
# primary's max_connections.
server_options() {
  local tls
  tls=$(tls_settings)
  # Commits return before their WAL is flushed; the WAL writer flushes (and
  # so sends to a replica) every 10 ms instead of 200, so a replica sees
  # commits within milliseconds, as with synchronous_commit=on.
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c wal_writer_delay=10ms"
  [[ "${PIZZA_PG_DURABLE:-0}" == 1 ]] && durability="-c fsync=on -c synchronous_commit=on"
  echo "-c max_connections=300 $durability $tls"
}

# run_server BIN DATA LOG SOCKET_DIR PORT ADDRESSES CHECK WHAT
# Starts the server of DATA with the shared options, then runs CHECK: a
# server binds what it can (one taken address is only a warning in its log),
# so the ports are checked again by asking who answers on them; when CHECK
# fails the server is stopped and the script exits with CHECK's status.
run_server() {
  local bin=$1 data=$2 log=$3 sockets=$4 port=$5 addresses=$6 check=$7 what=$8
  local options
  options=$(server_options)
  touch "$log"
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$log"; fi
  as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
    -o "-p $port -c listen_addresses=$addresses -c unix_socket_directories=$sockets $options" \
    start >/dev/null || { tail -n 30 "$log" >&2; die "$what did not start"; }
  local owned=0
  ("$check") || owned=$?
  if ((owned != 0)); then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    exit "$owned"
  fi
}

start() {
  local bin
  bin=$(find_bin) || { install_postgres && bin=$(find_bin); } || die "PostgreSQL server binaries not found (set PG_BIN)"
  if is_running; then
    check_ownership
    say "already running on 127.0.0.1:$PORT ($DIR)"
    return 0
  fi
  local address
  for address in "${ADDRESSES[@]}"; do
    answers_on "$address" && port_taken "something else already listens on $address:$PORT"
  done
  mkdir -p "$DIR"
  chmod 755 "$DIR"
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    rm -rf "$DATA"
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$PWFILE"
    if [[ $(id -u) -eq 0 ]]; then
      chown postgres "$DIR" "$PWFILE"
    fi
    chmod 600 "$PWFILE"
    say "initialising a cluster in $DATA"
    as_owner "$bin/initdb" -D "$DATA" -U postgres --pwfile="$PWFILE" -A scram-sha-256 \
      -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    if [[ $(id -u) -eq 0 ]]; then chown root "$PWFILE"; fi
  fi
  run_server "$bin" "$DATA" "$LOG" "$DIR" "$PORT" 127.0.0.1,127.0.0.2 check_ownership "the server"
  say "running on 127.0.0.1:$PORT and 127.0.0.2:$PORT ($DIR)"
}

stop() {
  local bin data
  for data in "$REPLICA_DATA" "$DATA"; do
    if [[ -f "$data/postmaster.pid" ]] && bin=$(find_bin); then
      as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
  done
  rm -rf "$DIR"
  say "stopped and removed $DIR"
}

replica_is_running() {
  [[ -f "$REPLICA_DATA/postmaster.pid" ]] || return 1
  local bin; bin=$(find_bin) || return 1
  as_owner "$bin/pg_ctl" -D "$REPLICA_DATA" status >/dev/null 2>&1
}

# Fails unless 127.0.0.1:REPLICA_PORT answers with the replica's data directory.
check_replica_ownership() {
  local got
  got=$(data_directory_on 127.0.0.1 "$REPLICA_PORT")
  if [[ -z "$got" || "$(readlink -f "$got")" != "$(readlink -f "$REPLICA_DATA")" ]]; then
    say "port $REPLICA_PORT is not this replica's: another server answers on 127.0.0.1:$REPLICA_PORT, not the replica in $REPLICA_DIR; set $REPLICA_PORT_VAR to a free port"
    exit 3
  fi
}

# A hot standby of the cluster: copied with pg_basebackup -R (which writes
# standby.signal and primary_conninfo, password included) the first time,
# then started; it streams from the primary over 127.0.0.1.
replica_start() {
  local bin
  bin=$(find_bin) || die "PostgreSQL server binaries not found (set PG_BIN)"
  is_running || die "the cluster in $DIR is not running (run: $0 start)"
  if replica_is_running; then
    check_replica_ownership
    say "replica already running on 127.0.0.1:$REPLICA_PORT ($REPLICA_DIR)"
    return 0
  fi
  if answers_on 127.0.0.1 "$REPLICA_PORT"; then
    say "port $REPLICA_PORT is not this replica's: something else already listens on 127.0.0.1:$REPLICA_PORT; set $REPLICA_PORT_VAR to a free port"
    exit 3
  fi
  mkdir -p "$REPLICA_DIR"
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$REPLICA_DIR"; fi
  chmod 700 "$REPLICA_DIR"
  if [[ ! -f "$REPLICA_DATA/PG_VERSION" ]]; then
    rm -rf "$REPLICA_DATA"
    say "copying the cluster into $REPLICA_DATA (pg_basebackup -R)"
    as_owner env PGPASSWORD="$(cat "$PWFILE")" "$bin/pg_basebackup" \
      -h 127.0.0.1 -p "$PORT" -U postgres -D "$REPLICA_DATA" -R -X stream -c fast -w \
      >"$REPLICA_DIR/basebackup.log" 2>&1 || { cat "$REPLICA_DIR/basebackup.log" >&2; die "pg_basebackup failed"; }
  fi
  run_server "$bin" "$REPLICA_DATA" "$REPLICA_LOG" "$REPLICA_DIR" "$REPLICA_PORT" 127.0.0.1 \
    check_replica_ownership "the replica"
  say "replica running on 127.0.0.1:$REPLICA_PORT ($REPLICA_DIR), streaming from 127.0.0.1:$PORT"
}

replica_stop() {
  local bin
  if replica_is_running && bin=$(find_bin); then
    as_owner "$bin/pg_ctl" -D "$REPLICA_DATA" -m fast -w stop >/dev/null
    say "replica stopped (its data is kept in $REPLICA_DATA)"
  else
    say "no replica running in $REPLICA_DIR"
  fi
}

env_lines() {
  local password; password=$(cat "$PWFILE")
  cat <<EOF
DB_DRIVER=postgres
DB_HOST=127.0.0.1
DB_PORT=$PORT
DB_USER=postgres
DB_PASSWORD=$password
DB_NAME=pizza_api
EOF
}

# Creates a database unless it exists (used for DB_NAME=pizza_api).
ensure_database() {
  local name="$1" bin
  bin=$(find_bin)
  PGPASSWORD=$(cat "$PWFILE") "$bin/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 ||
    PGPASSWORD=$(cat "$PWFILE") "$bin/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
      -c "CREATE DATABASE \"$name\"" >/dev/null
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) is_running ;;
  url) url ;;
  env) env_lines ;;
  createdb) ensure_database "${2:?database name}" ;;
  ca) [[ -f "$DIR/ca.crt" ]] && echo "$DIR/ca.crt" ;;
  replica-start) replica_start ;;
  replica-stop) replica_stop ;;
  replica-address) replica_is_running && echo "127.0.0.1:$REPLICA_PORT" ;;
  *) echo "usage: $0 start|stop|status|url|env|ca|createdb NAME|replica-start|replica-stop|replica-address" >&2; exit 2 ;;
esac

#!/usr/bin/env python3
"""Backup and restore figures for scripts/bench.sh (make bench).

    backup.py BIN WORK_DIR PIZZAS OUT_JSON [DB_NAME=... DB_HOST=... ...]

Builds a SQLite database of PIZZAS pizzas (the schema from the service's
own start-up, the rows inserted directly, as the service stores them), then
times four commands of the release binary BIN, each a process of its own:

    backup   SQLite -> file          restore  file -> PostgreSQL
    backup   PostgreSQL -> file      restore  file -> new SQLite file

The PostgreSQL steps run when DB_* settings of an empty database follow the
arguments. For each: wall time, rows per second (every copied row, users
and clients included) and the process's peak RSS (VmHWM, polled). Writes them
to OUT_JSON for report.py; exits non-zero when a command fails.

Standard library only: it must run wherever the bench runs.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time

INGREDIENTS = '["Tomato Sauce","Mozzarella","Basil"]'


def start_and_stop(binary, env, log):
    """Starts the service on the database once (schema and seed), then stops it."""
    with open(log, "w") as out:
        proc = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(log) as f:
                if "listening on http://" in f.read():
                    break
            if proc.poll() is not None:
                sys.exit(f"backup bench: the service exited before listening (log: {log})")
            time.sleep(0.1)
        proc.terminate()
        proc.wait(timeout=30)


def fill(path, pizzas):
    db = sqlite3.connect(path)
    stamp = "2025-11-10T12:34:56.%06dZ"
    rows = (
        (f"Pizza {i}", f"pizza {i}", "A pizza for the benchmark", INGREDIENTS, 9.5 + i % 7, 1 + i % 2,
         stamp % (i % 1000000), stamp % (i % 1000000), stamp % (i % 1000000) if i % 10 == 0 else None)
        for i in range(pizzas)
    )
    with db:
        db.execute("DELETE FROM pizzas")
        db.executemany(
            "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, "
            "updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    total = sum(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "pizzas", "oauth_clients"))
    db.close()
    return total


def peak_rss_kib(pid):
    """VmHWM (the peak resident set so far) of a running process, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed(name, binary, args, env, log, rows):
    # The peak RSS is polled from /proc while the command runs: the rusage
    # of a child started from Python counts Python's own size, inherited at
    # the fork. VmHWM only grows, so the last reading is the peak up to the
    # last few milliseconds.
    started = time.monotonic()
    peak = 0
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak = max(peak, peak_rss_kib(proc.pid))
            time.sleep(0.005)
        status = proc.returncode
    seconds = time.monotonic() - started
    if status != 0:
        sys.exit(f"backup bench: {name} failed (log: {log})")
    step = {"step": name, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_kib": peak}
    print(f"bench:   {name}: {rows} rows in {seconds:.2f} s, {rows / seconds:,.0f} rows/s, "
          f"peak RSS {peak / 1024:.1f} MiB", file=sys.stderr)
    return step


def main():
    binary, work, pizzas, out_json = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    pg = dict(arg.split("=", 1) for arg in sys.argv[5:])
    base = {"PATH": os.environ.get("PATH", ""), "APP_ENV": "development", "APP_HOST": "127.0.0.1", "APP_PORT": "0",
            "LOG_LEVEL": "info", "JWT_SECRET": "bench-only-jwt-secret-0123456789abcdefghijklmnop"}
    source = os.path.join(work, "backup-source.sqlite")
    start_and_stop(binary, {**base, "DB_DRIVER": "sqlite", "DB_PATH": source}, os.path.join(work, "backup-serve.log"))
    rows = fill(source, pizzas)
    steps = []
    first, second = os.path.join(work, "first.backup"), os.path.join(work, "second.backup")
    sqlite_env = {**base, "DB_DRIVER": "sqlite", "DB_PATH": source}
    steps.append(timed("backup SQLite", binary, ["backup", "--to", first], sqlite_env, os.path.join(work, "b1.log"), rows))
    if pg:
        pg_env = {**base, **pg}
        steps.append(timed("restore into PostgreSQL", binary, ["restore", "--from", first], pg_env,
                           os.path.join(work, "r1.log"), rows))
        steps.append(timed("backup PostgreSQL", binary, ["backup", "--to", second], pg_env,
                           os.path.join(work, "b2.log"), rows))
    else:
        second = first
    target_env = {**base, "DB_DRIVER": "sqlite", "DB_PATH": os.path.join(work, "restored.sqlite")}
    steps.append(timed("restore into SQLite", binary, ["restore", "--from", second], target_env,
                       os.path.join(work, "r2.log"), rows))
    with open(out_json, "w") as f:
        json.dump({"pizzas": pizzas, "rows": rows, "file_bytes": os.path.getsize(first), "steps": steps}, f, indent=2)


if __name__ == "__main__":
    main()

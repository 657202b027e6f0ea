#!/usr/bin/env python3
"""The public list at scale: p50/p99 of each kind of list query.

    lists.py BIN WORK_DIR PIZZAS OUT_JSON [DB_DRIVER=postgres DB_HOST=... DB_PORT=... DB_USER=... DB_PASSWORD=... DB_NAME=...]

Starts the release binary BIN once to create the schema (on a new SQLite
file in WORK_DIR, or on the empty PostgreSQL database the DB_* settings
name), inserts PIZZAS pizzas straight into the database (as the service
stores them: every tenth deleted, owners alternating between users 1 and
2, names "Pizza <i>"), VACUUMs and ANALYZEs PostgreSQL (as autovacuum does
within a minute of a bulk load), starts BIN on it and measures each query with wrk over one
keep-alive connection (`--latency`: p50, p99), then reads the service's
peak RSS (VmHWM) and checks that an offset above the maximum is refused
(400). Every measured query must answer 200, or the run fails. Writes the
figures to OUT_JSON (scripts/bench/scale_report.py turns them into the
table) and prints each as it is measured.

Standard library, wrk, and for PostgreSQL psql.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

INGREDIENTS = '["Tomato Sauce","Mozzarella","Basil"]'
SECONDS = os.environ.get("BENCH_LIST_SECONDS", "3")


def queries(pizzas):
    """Each measured query: (label, path).

    The names are "Pizza <i>", so "<i>" for an i above a tenth of the count
    matches that one pizza only: the rare term ("pizza <i>" too, but its
    word "pizza" is in every name). "pizza" matches every pizza: the common
    term, whose first page is full at once."""
    deep = max(pizzas - 10000, 0)
    rare = pizzas // 2 + 1
    return [
        ("first page (100)", "/api/v1/public/pizzas"),
        (f"cursor page after {deep:,}", f"/api/v1/public/pizzas?after={deep}"),
        ("offset=10000 (its maximum)", "/api/v1/public/pizzas?offset=10000"),
        (f"name={rare} (rare: one match)", f"/api/v1/public/pizzas?name={rare}"),
        (f"name=pizza {rare} (rare, with a word every name has)", f"/api/v1/public/pizzas?name=pizza+{rare}"),
        ("name=xyz (rare: no match)", "/api/v1/public/pizzas?name=xyz"),
        ("name=pizza (common: every pizza)", "/api/v1/public/pizzas?name=pizza"),
        ("name=pizza 5 (about 11 % of names)", "/api/v1/public/pizzas?name=pizza+5"),
        ("name=%25 (no trigram: bounded scan)", "/api/v1/public/pizzas?name=%25"),
        ("created_by=2", "/api/v1/public/pizzas?created_by=2"),
        (f"created_by=2, cursor after {deep:,}", f"/api/v1/public/pizzas?created_by=2&after={deep}"),
        (f"read by ID ({rare})", f"/api/v1/public/pizzas/{rare}"),
    ]


def serve(binary, env, log):
    out = open(log, "w")
    proc = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        with open(log) as f:
            found = re.search(r"listening on (http://\S+)", f.read())
        if found:
            return proc, found.group(1).rstrip("/")
        if proc.poll() is not None:
            sys.exit(f"list bench: the service exited before listening (log: {log})")
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"list bench: the service did not listen within 120 s (log: {log})")


def peak_rss_kib(proc):
    """The process's peak resident set over its whole life (VmHWM)."""
    with open(f"/proc/{proc.pid}/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1))


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)


def rows(pizzas):
    stamp = "2025-11-10T12:34:56.%06dZ"
    for i in range(1, pizzas + 1):
        yield (f"Pizza {i}", f"pizza {i}", "A pizza for the benchmark", INGREDIENTS, 9.5 + i % 7, 1 + i % 2,
               stamp % (i % 1000000), stamp % (i % 1000000), stamp % (i % 1000000) if i % 10 == 0 else None)


def fill_sqlite(path, pizzas):
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM pizzas")
        db.executemany(
            "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, "
            "updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(pizzas),
        )
        # The triggers put every new pizza on the name backlog, which the
        # service would move into the trigram index during the measurements;
        # index them all now instead, as a restore does.
        db.execute("INSERT INTO pizza_name_trigrams (pizza_name_trigrams) VALUES ('rebuild')")
        db.execute("DELETE FROM pizza_name_backlog")
    db.close()


def fill_postgres(pg, pizzas):
    sql = (
        "DELETE FROM pizzas; "
        "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, updated_at, "
        "deleted_at) SELECT 'Pizza ' || i, 'pizza ' || i, 'A pizza for the benchmark', "
        f"'{INGREDIENTS}'::jsonb, 9.5 + i % 7, 1 + i % 2, now(), now(), CASE WHEN i % 10 = 0 THEN now() END "
        f"FROM generate_series(1, {pizzas}) AS i"
    )
    env = {**os.environ, "PGPASSWORD": pg["DB_PASSWORD"]}
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg["DB_HOST"], "-p", pg["DB_PORT"], "-U", pg["DB_USER"],
         "-d", pg["DB_NAME"], "-c", sql, "-c", "VACUUM ANALYZE pizzas"],
        env=env, check=True,
    )


def status_of(url):
    try:
        with urllib.request.urlopen(url) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def to_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(url):
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{SECONDS}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    reqs = re.search(r"^\s*(\d+) requests in", out, re.M)
    return {"p50_ms": to_ms(pct["50"]), "p99_ms": to_ms(pct["99"]), "requests": int(reqs.group(1))}


def main():
    binary, work, pizzas, out_json = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    pg = dict(arg.split("=", 1) for arg in sys.argv[5:])
    env = {"PATH": os.environ.get("PATH", ""), "APP_ENV": "development", "APP_HOST": "127.0.0.1", "APP_PORT": "0",
           "LOG_LEVEL": "warn", "WORKERS": "4",
           "JWT_SECRET": "bench-only-jwt-secret-0123456789abcdefghijklmnop"}
    if pg:
        env.update(pg)
    else:
        env.update({"DB_DRIVER": "sqlite", "DB_PATH": os.path.join(work, "lists.sqlite")})
    log = os.path.join(work, "lists-serve.log")
    proc, _ = serve(binary, env, log)
    stop(proc)
    started = time.monotonic()
    if pg:
        fill_postgres(pg, pizzas)
    else:
        fill_sqlite(env["DB_PATH"], pizzas)
    seeded = round(time.monotonic() - started, 1)
    print(f"bench: {pizzas:,} pizzas inserted in {seeded} s", file=sys.stderr)
    proc, base = serve(binary, env, log)
    results = []
    try:
        for label, path in queries(pizzas):
            status = status_of(base + path)
            row = {"query": label, "path": path, "status": status}
            if status != 200:
                sys.exit(f"list bench: {path} answered {status}, not 200 (log: {log})")
            row.update(measure(base + path))
            results.append(row)
            print(f"bench:   {label}: p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms", file=sys.stderr)
        rss = peak_rss_kib(proc)
        over = status_of(base + "/api/v1/public/pizzas?offset=10001")
        if over != 400:
            sys.exit(f"list bench: an offset above the maximum answered {over}, not 400")
    finally:
        stop(proc)
    print(f"bench:   peak RSS of the service: {rss / 1024:.1f} MiB", file=sys.stderr)
    driver = "postgres" if pg else "sqlite"
    with open(out_json, "w") as f:
        json.dump({"driver": driver, "pizzas": pizzas, "seed_seconds": seeded, "peak_rss_kib": rss,
                   "queries": results}, f, indent=2)


if __name__ == "__main__":
    main()

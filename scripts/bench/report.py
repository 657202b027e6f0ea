#!/usr/bin/env python3
"""Turns the raw results of scripts/bench.sh into the report.

    report.py OUT_DIR

Reads, from OUT_DIR (target/bench):
    runs.tsv       one wrk run a line: database, row, threads, connections,
                   target count (0: time-limited), raw output file
    meta.txt       key=value facts gathered by bench.sh (date, nproc, wrk
                   version, binary size, peak RSS per database, ...)
    startup.json   start-to-healthy samples from startup.py (when measured)
    backup.json    backup and restore figures from backup.py (when measured)
and each run's `RESULT ...` line printed by api.lua's done().

Prints a Markdown report shaped like the design document's Benchmark
Results table, followed by read by ID at 32 connections against both
ceilings (the one on this listener, vendor/tiny_http, and the one on
tiny_http 0.12.0 as published: the runs of database `ceiling_upstream`);
writes it to OUT_DIR/results.md and everything as JSON to
OUT_DIR/results.json. Exits 1 when any run is missing, saw an unexpected
status or a socket error, or did fewer requests than asked: a number
measured on errors is not a result.

Standard library only: it must run wherever the bench runs.
"""

import json
import os
import sys

DATABASES = [("sqlite", "SQLite"), ("postgres", "PostgreSQL")]

# The two references, built from the same examples/ceiling.rs with the same
# workers and body: "ceiling" on the service's own, patched listener, and
# "ceiling_upstream" (bench/ceiling-upstream) on the crates.io release, which
# is measured after read by ID at 32 connections only.
CEILING_LABEL = "ceiling (this listener, vendor/tiny_http)"
UPSTREAM_LABEL = "ceiling (tiny_http 0.12.0 as published)"
UPSTREAM_ROW = "read_c32"

# (label, one-connection latency row, 32-connection throughput row)
OPERATIONS = [
    ("Create Pizza", "create", "create_c32"),
    ("Read Single Pizza", "read", "read_c32"),
    ("List Pizzas (10)", "list", "list_c32"),
    ("Update Pizza", "update", None),
    ("Delete Pizza (soft)", "delete", None),
    ("OAuth Token", "token", None),
]

INT_FIELDS = {"requests", "responses", "unexpected", "socket_errors", "p50_us", "p90_us", "p99_us", "max_us"}
FLOAT_FIELDS = {"duration_s", "rps", "mean_us"}


def parse_result(raw_path):
    """The fields of the RESULT line in a raw wrk output, or None."""
    try:
        with open(raw_path, encoding="utf-8", errors="replace") as f:
            all_lines = f.readlines()
        lines = [line for line in all_lines if line.startswith("RESULT ")]
    except OSError:
        return None
    if not lines:
        return None
    fields = {}
    cpu = [line for line in all_lines if line.startswith("SERVERCPU ")]
    if cpu:
        parts = dict(pair.partition("=")[::2] for pair in cpu[-1].split()[1:])
        fields["server_cpu_s"] = int(parts["ticks"]) / int(parts["hz"])
    for pair in lines[-1].split()[1:]:
        key, _, value = pair.partition("=")
        if key in INT_FIELDS:
            fields[key] = int(float(value))
        elif key in FLOAT_FIELDS:
            fields[key] = float(value)
        else:
            fields[key] = value
    return fields


def problems_of(run):
    """Why a run's figures cannot be trusted; empty when they can."""
    result = run["result"]
    if result is None:
        return ["no RESULT line: wrk or its script failed (see the raw output)"]
    found = []
    if result["unexpected"]:
        found.append(f"{result['unexpected']} unexpected status(es): {result['unexpected_statuses']}")
    if result["socket_errors"]:
        found.append(f"{result['socket_errors']} socket error(s) (connect/read/write/timeout)")
    if result["requests"] == 0:
        found.append("no request completed")
    elif run["target"] and result["responses"] < run["target"]:
        found.append(f"only {result['responses']} of {run['target']} requests done before wrk's -d ran out")
    return found


def read_runs(out_dir):
    runs = {}
    with open(os.path.join(out_dir, "runs.tsv"), encoding="utf-8") as f:
        for line in f:
            db, row, threads, conns, target, raw = line.rstrip("\n").split("\t")
            run = {
                "database": db,
                "row": row,
                "threads": int(threads),
                "connections": int(conns),
                "target": int(target),
                "raw": raw,
                "result": parse_result(raw),
            }
            run["problems"] = problems_of(run)
            runs[(db, row)] = run
    return runs


def read_meta(out_dir):
    meta = {}
    path = os.path.join(out_dir, "meta.txt")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    meta[key] = value
    return meta


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ms(us):
    return f"{us / 1000:.3f} ms"


def ratio_text(ratio):
    if ratio is None:
        return "n/a"
    # Small ratios keep two significant digits instead of reading as 0.00x.
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def flagged(text, run):
    # A figure from a run with problems keeps its value but never reads as clean.
    return f"{text} (!)" if run["problems"] else text


class Report:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.meta = read_meta(out_dir)
        self.runs = read_runs(out_dir)
        self.startup = read_json(os.path.join(out_dir, "startup.json"))
        self.backup = read_json(os.path.join(out_dir, "backup.json"))
        ceiling = self.runs.get(("ceiling", "read_c32"))
        self.ceiling_rps = ceiling["result"]["rps"] if ceiling and ceiling["result"] else None

    def ratio(self, rps, db=None, row=None):
        # A throughput row is compared with the ceiling run measured right
        # after it (same length, same load generator): on a shared, noisy
        # machine a ratio of two runs minutes apart says little.
        paired = self.runs.get(("ceiling", f"{db}_{row}")) if db else None
        base = paired["result"]["rps"] if paired and paired["result"] else self.ceiling_rps
        return rps / base if base else None

    def cpu_per_request(self, db, row):
        """Server CPU time per request in µs, when the run measured it."""
        run = self.runs.get((db, row))
        result = run and run["result"]
        if not result or "server_cpu_s" not in result or not result["requests"]:
            return None
        return result["server_cpu_s"] * 1e6 / result["requests"]

    def latency_cells(self, db, row):
        run = self.runs.get((db, row))
        if not run:
            return ["skipped", "skipped"]
        if not run["result"]:
            return ["failed (!)", "failed (!)"]
        return [flagged(ms(run["result"]["p50_us"]), run), flagged(ms(run["result"]["p99_us"]), run)]

    def throughput_cells(self, db, row):
        if row is None:
            return ["", ""]
        run = self.runs.get((db, row))
        if not run:
            return ["skipped", ""]
        if not run["result"]:
            return ["failed (!)", ""]
        rps = run["result"]["rps"]
        ratio = self.ratio(rps, db, row)
        cells = [flagged(f"{rps:,.0f}", run), ratio_text(ratio)]
        cpu = self.cpu_per_request(db, row)
        paired = self.cpu_per_request("ceiling", f"{db}_{row}") or self.cpu_per_request("ceiling", "read_c32")
        if cpu:
            cells[0] += f" ({cpu:.0f} µs CPU/req" + (f", ceiling {paired:.0f})" if paired and db != "ceiling" else ")")
        return cells

    def table(self):
        header = ["Operation"]
        for _, label in DATABASES:
            header += [f"{label} p50", f"{label} p99"]
        for _, label in DATABASES:
            header += [f"{label} req/s (32 conn)", "vs ceiling"]
        rows = []
        for name, latency_row, throughput_row in OPERATIONS:
            cells = [name]
            for db, _ in DATABASES:
                cells += self.latency_cells(db, latency_row)
            for db, _ in DATABASES:
                cells += self.throughput_cells(db, throughput_row)
            rows.append(cells)
        # The ceiling does not depend on a database: the same figures bound both columns.
        ceiling = ["Ceiling (this listener, vendor/tiny_http; fixed pizza)"]
        for _ in DATABASES:
            ceiling += self.latency_cells("ceiling", "read")
        for _ in DATABASES:
            ceiling += self.throughput_cells("ceiling", "read_c32")
        rows.append(ceiling)
        return markdown_table(header, rows)

    def upstream_ratio(self, db):
        """Read by ID at 32 connections: the service's req/s over the
        tiny_http 0.12.0 ceiling's, in the run made right after it."""
        run = self.runs.get((db, UPSTREAM_ROW))
        upstream = self.runs.get(("ceiling_upstream", f"{db}_{UPSTREAM_ROW}"))
        if not (run and run["result"] and upstream and upstream["result"] and upstream["result"]["rps"]):
            return None
        return run["result"]["rps"] / upstream["result"]["rps"]

    def both_ceilings_table(self):
        """Read by ID at 32 connections on each database next to the two
        ceilings measured right after it."""
        header = ["Read by ID, 32 conn"]
        for _, label in DATABASES:
            header += [f"{label} req/s", "service vs it", "CPU µs/req"]
        references = [
            ("pizza-api", lambda db: (db, UPSTREAM_ROW), lambda db: None),
            (CEILING_LABEL, lambda db: ("ceiling", f"{db}_{UPSTREAM_ROW}"),
             lambda db: self.ratio(self.runs[(db, UPSTREAM_ROW)]["result"]["rps"], db, UPSTREAM_ROW)),
            (UPSTREAM_LABEL, lambda db: ("ceiling_upstream", f"{db}_{UPSTREAM_ROW}"), self.upstream_ratio),
        ]
        rows = []
        for name, key_of, ratio_of in references:
            cells = [name]
            for db, _ in DATABASES:
                service = self.runs.get((db, UPSTREAM_ROW))
                run = self.runs.get(key_of(db))
                if not service:
                    cells += ["skipped", "", ""]
                    continue
                if not run or not run["result"] or not service["result"]:
                    cells += ["failed (!)" if run else "not measured", "", ""]
                    continue
                cpu = self.cpu_per_request(*key_of(db))
                ratio = ratio_of(db)
                cells += [
                    flagged(f"{run['result']['rps']:,.0f}", run),
                    "" if name == "pizza-api" else ratio_text(ratio),
                    f"{cpu:.0f}" if cpu else "n/a",
                ]
            rows.append(cells)
        return markdown_table(header, rows)

    def runs_table(self):
        header = ["Database", "Row", "wrk", "Requests (asked)", "req/s", "p50", "p90", "p99", "max", "Errors", "Problems", "Raw"]
        rows = []
        for run in self.runs.values():
            r = run["result"]
            asked = f" ({run['target']})" if run["target"] else ""
            cells = [run["database"], run["row"], f"-t{run['threads']} -c{run['connections']}"]
            if r:
                cells += [
                    f"{r['responses']}{asked}",
                    f"{r['rps']:,.0f}",
                    ms(r["p50_us"]),
                    ms(r["p90_us"]),
                    ms(r["p99_us"]),
                    ms(r["max_us"]),
                    str(r["unexpected"] + r["socket_errors"]),
                ]
            else:
                cells += [f"-{asked}", "-", "-", "-", "-", "-", "-"]
            cells += ["; ".join(run["problems"]) or "none", os.path.relpath(run["raw"], self.out_dir)]
            rows.append(cells)
        return markdown_table(header, rows)

    def facts(self):
        m = self.meta
        lines = [
            f"- Date: {m.get('date', '?')}",
            f"- Machine: nproc {m.get('nproc', '?')}, {m.get('cpu', '?')}",
            f"- wrk: {m.get('wrk_version', '?')}",
            f"- Commit: {m.get('commit', '?')}",
            f"- WORKERS: {m.get('workers', '?')} (service and both ceilings alike)",
            f"- Load average (1, 5, 15 min) before the bench: {m.get('loadavg_start', '?')} "
            f"(other work sharing the cores skews every figure); after: {m.get('loadavg_end', '?')}",
            f"- Whole run: {m.get('elapsed_seconds', '?')} s, build included",
            f"- Mode: {'quick (BENCH_QUICK=1: smoke test, figures not comparable)' if m.get('quick') == '1' else 'full'}",
        ]
        if "binary_bytes" in m:
            size = int(m["binary_bytes"])
            lines.append(f"- Release binary: {size:,} bytes ({size / 2**20:.2f} MiB)")
        for db, label in DATABASES:
            if f"{db}.peak_rss_kib" in m:
                kib = int(m[f"{db}.peak_rss_kib"])
                lines.append(f"- Peak RSS on {label} (VmHWM over the whole run): {kib:,} KiB ({kib / 1024:.1f} MiB)")
            elif f"{db}.skipped" in m:
                lines.append(f"- {label}: SKIPPED ({m[f'{db}.skipped']})")
        if m.get("postgres_version"):
            lines.append(f"- PostgreSQL server: {m['postgres_version']} (fsync and synchronous_commit on)")
        if self.startup:
            s = self.startup
            lines.append(
                f"- Start to healthy (existing SQLite database): median {s['median_ms']:.1f} ms over "
                f"{s['runs']} starts (min {s['min_ms']:.1f}, max {s['max_ms']:.1f})"
            )
        return "\n".join(lines)

    def backup_table(self):
        """Backup and restore: one row per command of backup.py."""
        b = self.backup
        header = ["Step", "Rows", "Seconds", "Rows/s", "Peak RSS"]
        rows = [
            [s["step"], f"{s['rows']:,}", f"{s['seconds']:.2f}", f"{s['rows_per_s']:,.0f}",
             f"{s['peak_rss_kib'] / 1024:.1f} MiB"]
            for s in b["steps"]
        ]
        return (
            f"Backup and restore of {b['pizzas']:,} pizzas ({b['rows']:,} rows with users and clients; "
            f"backup file {b['file_bytes'] / 2**20:.1f} MiB), each step a process of its own:\n\n"
            + markdown_table(header, rows)
        )

    def problems(self):
        return [f"{run['database']}/{run['row']}: {p}" for run in self.runs.values() for p in run["problems"]]

    def markdown(self):
        m = self.meta
        parts = [
            "## pizza-api benchmark results",
            "",
            f"p50/p99: one keep-alive connection (wrk -t1 -c1), {m.get('latency_requests', '?')} requests per row "
            f"({m.get('token_requests', '?')} for OAuth Token). req/s: wrk -t2 -c32 for "
            f"{m.get('throughput_seconds', '?')} s; 'vs ceiling' divides by the req/s of the {CEILING_LABEL} run measured right after that row; in brackets, the server's CPU time per request in that run and in the ceiling's. "
            f"{m.get('seeded', '?')} pizzas seeded per database. (!) marks a figure from a run with problems.",
            "",
            self.table(),
            "",
            "Read by ID at 32 connections against both ceilings, built from the same examples/ceiling.rs with "
            "the same workers and body, each run right after the service's on that database. The first is the "
            "one 'vs ceiling' above uses; the second (bench/ceiling-upstream) is the reference used before the "
            "listener was patched. 'service vs it': pizza-api's req/s divided by that ceiling's; CPU µs/req: "
            "each server's own CPU time per request in its run.",
            "",
            self.both_ceilings_table(),
            "",
            self.facts(),
            "",
        ]
        if self.backup:
            parts += [self.backup_table(), ""]
        parts += [
            "### Every wrk run",
            "",
            self.runs_table(),
        ]
        problems = self.problems()
        parts += ["", "### Problems", ""]
        parts += [f"- {p}" for p in problems] if problems else ["none"]
        return "\n".join(parts) + "\n"

    def as_json(self):
        ops = []
        for name, latency_row, throughput_row in OPERATIONS:
            entry = {"operation": name}
            for db, _ in DATABASES:
                entry[db] = {
                    "latency": self.runs.get((db, latency_row)),
                    "throughput": self.runs.get((db, throughput_row)) if throughput_row else None,
                }
                t = entry[db]["throughput"]
                if t and t["result"]:
                    entry[db]["throughput_vs_ceiling"] = self.ratio(t["result"]["rps"], db, throughput_row)
                    entry[db]["server_cpu_us_per_request"] = self.cpu_per_request(db, throughput_row)
                    entry[db]["ceiling_cpu_us_per_request"] = self.cpu_per_request("ceiling", f"{db}_{throughput_row}")
                    if throughput_row == UPSTREAM_ROW:
                        upstream = self.runs.get(("ceiling_upstream", f"{db}_{throughput_row}"))
                        entry[db]["upstream_ceiling_rps"] = (
                            upstream["result"]["rps"] if upstream and upstream["result"] else None
                        )
                        entry[db]["throughput_vs_upstream_ceiling"] = self.upstream_ratio(db)
                        entry[db]["upstream_ceiling_cpu_us_per_request"] = self.cpu_per_request(
                            "ceiling_upstream", f"{db}_{throughput_row}"
                        )
            ops.append(entry)
        return {
            "meta": self.meta,
            "operations": ops,
            "ceiling": {
                "label": CEILING_LABEL,
                "latency": self.runs.get(("ceiling", "read")),
                "throughput": self.runs.get(("ceiling", "read_c32")),
            },
            # Measured only right after each database's read by ID at 32 connections.
            "upstream_ceiling": {
                "label": UPSTREAM_LABEL,
                "throughput": {db: self.runs.get(("ceiling_upstream", f"{db}_{UPSTREAM_ROW}")) for db, _ in DATABASES},
            },
            "start_to_healthy": self.startup,
            "backup": self.backup,
            "runs": list(self.runs.values()),
            "problems": self.problems(),
        }


def markdown_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = argv[1]
    report = Report(out_dir)
    text = report.markdown()
    print(text)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(report.as_json(), f, indent=2)
        f.write("\n")
    problems = report.problems()
    if problems:
        print(f"report: {len(problems)} problem(s); the figures above marked (!) are not results", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

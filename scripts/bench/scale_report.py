#!/usr/bin/env python3
"""Turns the results of scripts/bench-scale.sh into its report.

    scale_report.py OUT_DIR

Reads OUT_DIR/sqlite.json and OUT_DIR/postgres.json (from
scripts/bench/lists.py; either may be missing when that half was skipped)
and OUT_DIR/meta.json, and prints a Markdown table of every query's p50 and
p99 per database, then each of issue 12's targets and whether it was met:

    every query: p50 <= 5 ms and p99 <= 20 ms over one connection;
    the deepest cursor page's p50 within 1.5x the first page's p50;
    the service's peak RSS <= 64 MiB.

Writes the report to OUT_DIR/results.md and the figures with the verdicts
to OUT_DIR/results.json. Misses are reported, not fatal: latencies on a
machine shared with other work are not a pass/fail signal. Standard library
only.
"""

import json
import os
import sys

P50_MS, P99_MS, DEEP_RATIO, RSS_MIB = 5.0, 20.0, 1.5, 64.0


def verdicts(run):
    """The targets for one database's run: (target, figure, met)."""
    found = []
    for q in run["queries"]:
        met = q["p50_ms"] <= P50_MS and q["p99_ms"] <= P99_MS
        found.append((f"{q['query']}: p50 <= {P50_MS:g} ms, p99 <= {P99_MS:g} ms",
                      f"{q['p50_ms']:.3f} / {q['p99_ms']:.3f} ms", met))
    first = next(q for q in run["queries"] if q["path"] == "/api/v1/public/pizzas")
    deep = next(q for q in run["queries"] if q["path"].startswith("/api/v1/public/pizzas?after="))
    ratio = deep["p50_ms"] / first["p50_ms"]
    found.append((f"deepest cursor page p50 <= {DEEP_RATIO:g}x first page p50", f"{ratio:.2f}x",
                  ratio <= DEEP_RATIO))
    rss = run["peak_rss_kib"] / 1024
    found.append((f"peak RSS <= {RSS_MIB:g} MiB", f"{rss:.1f} MiB", rss <= RSS_MIB))
    return found


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "meta.json")) as f:
        meta = json.load(f)
    runs = {}
    for driver in ("sqlite", "postgres"):
        path = os.path.join(out, f"{driver}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs[driver] = json.load(f)
    if not runs:
        sys.exit("scale report: no results in " + out)
    drivers = list(runs)
    lines = [
        f"### List and read at {meta['pizzas']:,} pizzas ({meta['date']}, commit {meta['commit']}, "
        f"{meta['nproc']} cores, load {meta['loadavg_start']} -> {meta['loadavg_end']}, "
        f"{meta['elapsed_seconds']} s)",
        "",
        "One keep-alive connection (wrk -t1 -c1 --latency), p50 / p99 in ms.",
        "",
        "| Query | " + " | ".join(drivers) + " |",
        "|---|" + "---|" * len(drivers),
    ]
    first = runs[drivers[0]]["queries"]
    for i, q in enumerate(first):
        cells = [f"{runs[d]['queries'][i]['p50_ms']:.3f} / {runs[d]['queries'][i]['p99_ms']:.3f}" for d in drivers]
        lines.append(f"| {q['query']} | " + " | ".join(cells) + " |")
    lines.append("| bulk insert of the pizzas (s) | " + " | ".join(str(runs[d]["seed_seconds"]) for d in drivers) + " |")
    lines.append("| peak RSS of the service (MiB) | "
                 + " | ".join(f"{runs[d]['peak_rss_kib'] / 1024:.1f}" for d in drivers) + " |")
    lines += ["", "Targets:", ""]
    summary = {"meta": meta, "runs": runs, "targets": {}}
    missed = 0
    for d in drivers:
        summary["targets"][d] = []
        for target, figure, met in verdicts(runs[d]):
            summary["targets"][d].append({"target": target, "figure": figure, "met": met})
            if not met:
                missed += 1
                lines.append(f"- MISSED on {d}: {target} (measured {figure})")
    if missed == 0:
        lines.append("- every target met on " + " and ".join(drivers))
    report = "\n".join(lines) + "\n"
    print(report)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()

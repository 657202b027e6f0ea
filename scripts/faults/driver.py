"""Runs the fault scenarios (scenarios.py) against the release binary and
prints one `PASS name (figures)` / `FAIL name: reason` line per scenario and
database, then `N passed, M failed`. Exit status 1 when anything failed.
Started by scripts/test-faults.sh, which builds the binary, makes the temp
dir, starts the private PostgreSQL and cleans everything up afterwards.

    driver.py --bin BIN --work DIR --pid-file FILE
              [--postgres | --no-postgres REASON] [SCENARIO ...]

--postgres: PIZZA_PG_DIR / PIZZA_PG_PORT name a running private cluster.
--no-postgres REASON: it could not be started; under CI=true every
PostgreSQL run is then a FAIL, elsewhere a SKIP.
"""

import argparse
import os
import signal
import sys
import time
import traceback

from harness import Context, Fail, Postgres, Run, Sqlite, Unavailable, raise_nofile, say, warn, exit_on_term
from scenarios import SCENARIOS


def on_alarm(_signum, _frame):
    raise Fail("the scenario ran past its time budget")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--pid-file", required=True)
    pg = parser.add_mutually_exclusive_group(required=True)
    pg.add_argument("--postgres", action="store_true")
    pg.add_argument("--no-postgres", metavar="REASON")
    parser.add_argument("only", nargs="*", help="scenario names (default: all)")
    args = parser.parse_args()

    exit_on_term()
    signal.signal(signal.SIGALRM, on_alarm)
    nofile = raise_nofile()
    ci = os.environ.get("CI") == "true"
    known = {s.name for s in SCENARIOS}
    unknown = [name for name in args.only if name not in known]
    if unknown:
        warn(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return 2

    ctx = Context(args.bin, args.work, args.pid_file)
    dbs = {"sqlite": Sqlite(args.work)}
    if args.postgres:
        try:
            dbs["postgres"] = Postgres()
        except (Fail, OSError, KeyError) as err:
            dbs["postgres"] = Unavailable("postgres", f"cannot use the private cluster: {err}")
    else:
        dbs["postgres"] = Unavailable("postgres", args.no_postgres)
    warn(f"driver RLIMIT_NOFILE {nofile}; binary {args.bin}")

    passed = failed = skipped = 0
    for sc in SCENARIOS:
        if args.only and sc.name not in args.only:
            continue
        for db_name in sc.databases:
            db = dbs[db_name]
            name = f"{sc.name}/{db_name}"
            if isinstance(db, Unavailable):
                if ci:
                    say(f"FAIL {name}: CI=true and PostgreSQL is unavailable ({db.reason})")
                    failed += 1
                else:
                    say(f"SKIP {name}: {db.reason}")
                    skipped += 1
                continue
            run = Run(ctx, sc.name, db)
            started = time.monotonic()
            signal.alarm(sc.budget)
            try:
                sc.fn(run)
            except Fail as err:
                run.failures.append(str(err))
            except Exception as err:  # noqa: BLE001 - a harness error fails the run, with its place
                where = traceback.extract_tb(err.__traceback__)[-1]
                run.failures.append(f"{type(err).__name__}: {err} (at {os.path.basename(where.filename)}:{where.lineno})")
            finally:
                signal.alarm(0)
                try:
                    run.finish()
                except Exception as err:  # noqa: BLE001
                    run.failures.append(f"could not stop the service: {err}")
            took = time.monotonic() - started
            figures = "; ".join(run.figures + [f"{took:.1f} s"])
            if run.failures:
                say(f"FAIL {name}: {' | '.join(run.failures)} ({figures})")
                failed += 1
            else:
                say(f"PASS {name} ({figures})")
                passed += 1
    if skipped:
        warn(f"!!! {skipped} PostgreSQL run(s) SKIPPED: no PostgreSQL !!!")
    say(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

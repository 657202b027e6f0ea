"""A timing client in its own process, so the driver's threads cannot skew
its figures: every INTERVAL seconds (a fixed schedule; a late tick is not
made up) it GETs each PATH in turn, until its stdin reaches end of file (the
driver closes it) or MAX_SECONDS pass, then prints
(started: time.monotonic(), the same clock as the driver's)
{"samples": [[path, status, seconds, started], ...],
 "errors": [[path, message, started], ...],
 "bodies": {"path status": first body seen with that status, ...}}.

    python3 monitor.py PORT INTERVAL MAX_SECONDS [--keepalive] PATH [PATH...]

Without --keepalive every request has a new connection (as a probe of an
orchestrator does); with it, one kept connection per path, reopened after
a failure or a close. Each request may take 5 s.
"""

import http.client
import json
import os
import select
import sys
import time


def main():
    port, interval, max_seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    args = sys.argv[4:]
    keepalive = "--keepalive" in args
    paths = [a for a in args if a != "--keepalive"]
    samples, errors, bodies = [], [], {}
    conns = {}
    end = time.monotonic() + max_seconds
    tick = time.monotonic()
    while time.monotonic() < end:
        readable, _, _ = select.select([0], [], [], 0)
        if readable:
            break  # the driver closed our stdin (or wrote to it): stop
        for path in paths:
            started = time.monotonic()
            conn = conns.get(path) if keepalive else None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                took = time.monotonic() - started
                samples.append([path, resp.status, took, started])
                key = f"{path} {resp.status}"
                if key not in bodies:
                    bodies[key] = body[:500].decode(errors="replace")
                if keepalive and not resp.will_close:
                    conns[path] = conn
                else:
                    conn.close()
                    conns.pop(path, None)
            except (OSError, http.client.HTTPException) as err:
                errors.append([path, f"{type(err).__name__}: {err} after {time.monotonic() - started:.3f} s", started])
                conn.close()
                conns.pop(path, None)
        tick += interval
        pause = tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            tick = time.monotonic()
    for conn in conns.values():
        conn.close()
    json.dump({"samples": samples, "errors": errors, "bodies": bodies}, sys.stdout)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

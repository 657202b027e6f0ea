"""A well-behaved client, in its own process so the driver's threads cannot
skew its timings: GETs the given paths in turn, each on a new connection,
for DURATION seconds with INTERVAL seconds between requests, then prints
(started: time.monotonic(), the same clock as the driver's)
{"samples": [[path, status, seconds, started], ...], "errors": [[path, message], ...]}.

    python3 probe.py PORT DURATION INTERVAL PATH [PATH...]
"""

import http.client
import json
import sys
import time


def main():
    port, duration, interval = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    paths = sys.argv[4:]
    samples, errors = [], []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        path = paths[i % len(paths)]
        i += 1
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            samples.append([path, resp.status, time.monotonic() - started, started])
        except (OSError, http.client.HTTPException) as err:
            errors.append([path, f"{type(err).__name__}: {err} after {time.monotonic() - started:.3f} s"])
        finally:
            conn.close()
        time.sleep(interval)
    json.dump({"samples": samples, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()

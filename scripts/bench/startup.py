#!/usr/bin/env python3
"""Time from process start to the first 200 from /health, for scripts/bench.sh.

Starts the pizza-api binary RUNS times on an existing SQLite database (the
bench's own, so migrations and the seed are already done and only a real
restart is measured), polls /health about every millisecond with a raw
socket, stops the process, and writes the samples and their median (ms) as
JSON. Everything else the server needs (JWT_SECRET, DB_PATH, ...) comes from
the environment this script is given.

    startup.py BINARY RUNS OUT_JSON LOG_FILE

Standard library only: it must run wherever the bench runs.
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

POLL_INTERVAL_S = 0.001
HEALTHY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ATTEMPTS_PER_START = 3


class PortTaken(RuntimeError):
    """Another program answered on the port picked for the server."""


def free_port():
    # The server must listen on a port known in advance: reading its log line
    # for the port would add the log's own latency to what is measured. The
    # port is free now; nothing else on this machine races for it in the
    # few milliseconds until the server binds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_status(port):
    """The status code of GET /health, or None while nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return None
    # "HTTP/1.1 200 OK" -> 200
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def owns_listener(pid, port):
    """Whether process PID holds the socket listening on 127.0.0.1:PORT.

    Checked after each 200 (outside the timing): other programs on the machine
    also bind free ports, and a 200 from one of them must not count as ours.
    """
    local = f"0100007F:{port:04X}"  # /proc/net/tcp spells 127.0.0.1 little-endian
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            inodes = {cols[9] for cols in (line.split() for line in f) if cols[1] == local and cols[3] == "0A"}
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return True  # no /proc to ask: trust the answer
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_start(binary, log):
    port = free_port()
    env = dict(os.environ, APP_HOST="127.0.0.1", APP_PORT=str(port))
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        while time.perf_counter() - started < HEALTHY_TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} before it was healthy")
            if health_status(port) == 200:
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                if not owns_listener(proc.pid, port):
                    raise PortTaken(f"port {port} answered, but not from the server started here")
                return elapsed_ms
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"no 200 from /health within {HEALTHY_TIMEOUT_S:.0f}s")
    finally:
        stop(proc)


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    binary, runs, out_path, log_path = argv[1], int(argv[2]), argv[3], argv[4]
    samples = []
    with open(log_path, "ab") as log:
        for i in range(runs):
            for attempt in range(1, ATTEMPTS_PER_START + 1):
                try:
                    samples.append(round(one_start(binary, log), 2))
                    break
                except PortTaken as err:
                    # Another program took the free port in between: try another one.
                    if attempt == ATTEMPTS_PER_START:
                        print(f"startup: run {i + 1}: {err}", file=sys.stderr)
                        return 1
                except RuntimeError as err:
                    print(f"startup: run {i + 1}: {err} (log: {log_path})", file=sys.stderr)
                    return 1
    result = {"runs": runs, "samples_ms": samples, "median_ms": round(statistics.median(samples), 2),
              "min_ms": min(samples), "max_ms": max(samples)}
    with open(out_path, "w") as out:
        json.dump(result, out, indent=2)
    print(f"startup: start to healthy, median {result['median_ms']} ms over {runs} starts "
          f"(min {result['min_ms']}, max {result['max_ms']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

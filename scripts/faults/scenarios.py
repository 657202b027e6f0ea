"""The fault and flood scenarios. Each is a function of a Run (harness.py):
it starts its service(s) with run.service(env, nofile), does its damage,
records figures with run.figure() and assertions with run.check(), or
raises Fail when it cannot go on. The runner stops every service afterwards
and fails the run if one died on its own or logged a panic.

Register a scenario with @scenario(name, databases=..., budget=seconds).
A database-fault scenario (later) takes databases=("postgres",) and uses
run.db.postmaster_pid() / run.db.cluster("stop") and svc.kill(); the runner
already gives it a fresh database and cleans up after it.
"""

import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from harness import (HOST, WORKERS, DEV_CLIENT, Fail, connect, fd_count, http_request, json_dumps,
                     latency_summary, mib, ms, now, percentile, read_response, status_of, HERE)
import json


@dataclass
class Scenario:
    name: str
    databases: tuple
    budget: int
    fn: object


SCENARIOS = []


def scenario(name, databases=("sqlite",), budget=90):
    def register(fn):
        SCENARIOS.append(Scenario(name, tuple(databases), budget, fn))
        return fn

    return register


# ---------------------------------------------------------------- helpers

REJECTED_408 = 'pizza_api_http_transport_rejections_total{status="408"}'
REJECTED_413 = 'pizza_api_http_transport_rejections_total{status="413"}'


@dataclass
class Conn:
    """A client connection the driver watches for an answer or a close."""
    sock: socket.socket
    kind: str
    t_first: float  # when its first request byte was sent
    buf: bytes = b""
    status: int = None
    t_answer: float = None
    t_closed: float = None
    how: str = None  # "eof" or "reset"
    sent: int = 0  # bytes of the request sent so far (slow senders)
    extra: dict = field(default_factory=dict)


def watch(conns, deadline, every_second=None):
    """Reads every conn until each is closed by the server or the deadline
    passes; records the first status line and when the close came. Calls
    every_second() once a second meanwhile."""
    sel = selectors.DefaultSelector()
    for c in conns:
        if c.t_closed is None:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
    open_count = len(sel.get_map())
    next_tick = now() + 1.0
    while open_count and now() < deadline:
        wait = max(0.0, min(deadline, next_tick) - now())
        for key, _ in sel.select(wait):
            c = key.data
            how = None
            try:
                chunk = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk, how = b"", "reset"
            except OSError:
                chunk, how = b"", "error"
            if chunk:
                c.buf += chunk
                if c.status is None and len(c.buf) >= 12:
                    c.status = status_of(c.buf) or -1
                    c.t_answer = now()
            else:
                c.t_closed = now()
                c.how = how or "eof"
                sel.unregister(c.sock)
                open_count -= 1
        if every_second and now() >= next_tick:
            every_second()
            next_tick += 1.0
    sel.close()


def close_all(conns):
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass


class Sampler:
    """Peaks of the service's Threads, VmRSS and VmHWM, sampled on demand."""

    def __init__(self, svc):
        self.svc = svc
        self.threads = 0
        self.rss = 0
        self.hwm = 0
        self.fds = 0

    def sample(self, fds=False):
        st = self.svc.status()
        self.threads = max(self.threads, st["Threads"])
        self.rss = max(self.rss, st["VmRSS"])
        self.hwm = max(self.hwm, st["VmHWM"])
        if fds:
            self.fds = max(self.fds, fd_count(self.svc.pid))
        return st


def start_probe(port, duration, interval, *paths):
    return subprocess.Popen([sys.executable, "-B", str(HERE / "probe.py"), str(port), str(duration), str(interval), *paths],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)


def probe_result(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise Fail(f"the probe client did not finish within {timeout:.0f} s")
    if proc.returncode != 0:
        raise Fail(f"the probe client failed (exit code {proc.returncode})")
    return json.loads(out)


def counts(items):
    out = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(out.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- 1. stalled-bodies

BODY_HEAD = (b"POST /api/v1/pizzas HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 500\r\n\r\n")
BODY_START = b'{"name":"x'  # 10 of the 500 bytes announced
assert len(BODY_START) == 10
SLOW_HEAD = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pizza-api-test-faults\r\n\r\n"


@scenario("stalled-bodies", databases=("sqlite", "postgres"), budget=60)
def stalled_bodies(run):
    read_timeout = 2.0
    n_body, n_slow = 1000, 200
    # 1,200 stalled connections stay under the default MAX_CONNECTIONS (2048):
    # a request being read is never evicted, so past the cap a fresh client
    # would rightly be refused 503 until the stalled ones time out.
    svc = run.service({"HTTP_READ_TIMEOUT_MS": str(int(read_timeout * 1000))}, nofile=4096)
    sampler = Sampler(svc)
    conns = []
    setup_started = now()
    try:
        for _ in range(n_body):
            s = connect(svc.port)
            s.sendall(BODY_HEAD + BODY_START)
            conns.append(Conn(s, "body", now()))
        for _ in range(n_slow):
            s = connect(svc.port)
            s.sendall(SLOW_HEAD[:1])
            conns.append(Conn(s, "slow", now(), sent=1))
    except OSError as err:
        close_all(conns)
        raise Fail(f"could not open stalled connection {len(conns) + 1}: {err}")
    setup = now() - setup_started
    run.figure(f"{n_body}+{n_slow} stalled in {setup:.2f} s")

    slow = [c for c in conns if c.kind == "slow"]

    def drip():  # one more byte a second on each slow sender still waiting
        for c in slow:
            if c.t_closed is None and c.status is None and c.sent < len(SLOW_HEAD):
                try:
                    c.sock.send(SLOW_HEAD[c.sent:c.sent + 1])
                    c.sent += 1
                except OSError:
                    pass

    # Each stalled connection must be answered 408 or closed within
    # HTTP_READ_TIMEOUT_MS + 2 s of its first byte.
    deadline = max(c.t_first for c in conns) + read_timeout + 2.0
    probe = start_probe(svc.port, 3.0, 0.01, "/livez", "/api/v1/public/pizzas/1")
    watcher = threading.Thread(target=watch, args=(conns, deadline, drip), daemon=True)
    watcher.start()
    try:
        while watcher.is_alive() or probe.poll() is None:
            if now() > deadline + 15:
                raise Fail("the watcher or probe did not finish in time")
            if svc.alive():
                sampler.sample()
            time.sleep(0.1)
        watcher.join(timeout=5)
        result = probe_result(probe, timeout=15)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        close_all(conns)

    svc.require_alive("while clients stalled")
    samples, errors = result["samples"], result["errors"]
    latencies = [s[2] for s in samples]
    first_reaction = min((c.t_answer or c.t_closed for c in conns if (c.t_answer or c.t_closed)), default=None)
    run.figure(f"probe {latency_summary(latencies)}")
    bad = [f"{s[0]} {s[1]}" for s in samples if s[1] != 200]
    run.check(not errors, f"{len(errors)} probe request(s) failed, first: {errors[0] if errors else ''}")
    run.check(not bad, f"{len(bad)} probe answer(s) not 200 ({counts(bad)})")
    run.check(len(samples) >= 20, f"the probe completed only {len(samples)} requests in 3 s")
    if latencies:
        p99 = percentile(latencies, 99)
        run.check(p99 <= 0.050, f"probe p99 {ms(p99)} > 50 ms")

    outcome = []
    late = []
    for c in conns:
        limit = c.t_first + read_timeout + 2.0
        if c.t_closed is None or c.t_closed > limit:
            outcome.append("408, left open" if c.status == 408 else
                           f"{c.status}, left open" if c.status else "still open")
        elif c.status == 408:
            outcome.append("408")
        elif c.status is None:
            outcome.append(f"closed ({c.how})")
        else:
            outcome.append(f"answered {c.status}")
        if c.t_closed is not None:
            late.append(c.t_closed - c.t_first)
    summary = counts(outcome)
    run.figure(f"stalled: {summary}")
    if late:
        run.figure(f"first byte to close: min {min(late):.2f} s, max {max(late):.2f} s")
    if first_reaction is not None:
        n_during = sum(1 for s in samples if s[3] + s[2] < first_reaction)
        run.figure(f"{n_during} probe(s) done before the server answered or closed any stalled connection")
    wrong = [o for o in outcome if o != "408" and not o.startswith("closed")]
    run.check(not wrong, f"{len(wrong)} of {len(conns)} stalled connections were not answered 408 or closed "
                         f"within HTTP_READ_TIMEOUT_MS + 2 s ({summary})")
    st = sampler.sample()
    run.figure(f"threads peak {sampler.threads}, VmHWM {mib(st['VmHWM'])}")
    m = svc.metrics()
    run.figure(f"408 counted {m.get(REJECTED_408, 0):.0f}")


# ---------------------------------------------------------------- 2. idle-keepalive-10k

LIVEZ = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@scenario("idle-keepalive-10k", databases=("sqlite",), budget=90)
def idle_keepalive_10k(run):
    total, every = 10_000, 500
    cap = 2048  # the default MAX_CONNECTIONS
    # The cap must be reached by eviction, not relieved by idle timeouts: at
    # 5 s this needs over 205 connections a second (one client opens several
    # thousand a second on loopback).
    keepalive = 5.0
    svc = run.service({"HTTP_KEEPALIVE_TIMEOUT_MS": str(int(keepalive * 1000))}, nofile=4096)
    thread_cap = cap + WORKERS + 32
    sampler = Sampler(svc)
    socks, health, not_ok = [], [], []
    over_threads = []
    started = now()
    try:
        for i in range(1, total + 1):
            try:
                s = connect(svc.port)
                socks.append(s)
                s.sendall(LIVEZ)
                status, _, _ = read_response(s, now() + 5.0)
                if status != 200:
                    not_ok.append(f"{status}")
            except Exception as err:  # noqa: BLE001 - every failure is counted
                not_ok.append(type(err).__name__)
            if i % 100 == 0:
                st = sampler.sample()
                if st["Threads"] > thread_cap:
                    over_threads.append((i, st["Threads"]))
            if i % every == 0:
                for _ in range(5):
                    status, _, took = http_request(svc.port, "GET", "/health", timeout=5)
                    health.append(took)
                    if status != 200:
                        not_ok.append(f"/health {status}")
            if now() - started > 50:
                raise Fail(f"opening {total} connections took over 50 s (opened {i})")
        opened_in = now() - started
        idle_since = now()
        run.figure(f"{total} opened in {opened_in:.1f} s ({total / opened_in:.0f}/s)")
        m = svc.metrics()
        evicted = m.get("pizza_api_http_connections_evicted_total", 0)
        open_now = m.get("pizza_api_http_connections_open", -1)
        refused = m.get("pizza_api_http_connections_refused_total", 0)
        run.figure(f"evicted {evicted:.0f}, refused {refused:.0f}, open {open_now:.0f}")
        run.check(not not_ok, f"{len(not_ok)} request(s) not answered 200 ({counts(not_ok)})")
        run.check(evicted > 0, "pizza_api_http_connections_evicted_total is 0 after 10,000 connections")
        run.check(0 <= open_now <= cap, f"pizza_api_http_connections_open is {open_now:.0f} (cap {cap})")
        # Idle timeouts: every kept connection must be closed by the server.
        deadline = idle_since + keepalive + 2.0
        fell = None
        while now() < deadline:
            time.sleep(0.5)
            if fell is None and svc.metrics()["pizza_api_http_connections_open"] <= 5:
                fell = now() - idle_since
        m = svc.metrics()
        open_after = m.get("pizza_api_http_connections_open", -1)
        run.figure(f"open after {keepalive + 2:.0f} s idle: {open_after:.0f}"
                   + (f" (<= 5 after {fell:.1f} s)" if fell is not None else "")
                   + f", idle timeouts {m.get('pizza_api_http_idle_timeouts_total', 0):.0f}")
        run.check(0 <= open_after <= 5,
                  f"pizza_api_http_connections_open is {open_after:.0f} HTTP_KEEPALIVE_TIMEOUT_MS + 2 s later")
    finally:
        for s in socks:
            s.close()
    st = sampler.sample()
    run.figure(f"/health {latency_summary(health)}")
    run.figure(f"threads peak {sampler.threads} (limit {thread_cap}), VmHWM {mib(st['VmHWM'])}")
    if health:
        p99 = percentile(health, 99)
        run.check(p99 <= 0.050, f"/health p99 {ms(p99)} > 50 ms")
    run.check(st["VmHWM"] <= 128 * 1024, f"VmHWM {mib(st['VmHWM'])} > 128 MiB")
    run.check(not over_threads, f"Threads above {thread_cap} at {len(over_threads)} sample(s), "
                                f"first {over_threads[0] if over_threads else ''}")


# ---------------------------------------------------------------- 3. fd-exhaustion


@scenario("fd-exhaustion", databases=("sqlite", "postgres"), budget=60)
def fd_exhaustion(run):
    attempts, hold = 1000, 3.0
    svc = run.service({"MAX_CONNECTIONS": "1024"}, nofile=256)
    sampler = Sampler(svc)
    sampler.sample(fds=True)
    base_fds = sampler.fds
    sel = selectors.DefaultSelector()
    conns = []
    try:
        for _ in range(attempts):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((HOST, svc.port))
            c = Conn(s, "flood", now(), extra={"connect": rc})
            conns.append(c)
            sel.register(s, selectors.EVENT_WRITE, c)
        end = now() + hold
        next_sample = now()
        while now() < end:
            for key, events in sel.select(0.05):
                c = key.data
                if events & selectors.EVENT_WRITE:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        c.extra["error"] = err
                        sel.unregister(c.sock)
                        continue
                    c.extra["connected"] = True
                    try:
                        c.sock.send(LIVEZ)
                    except OSError as e:
                        c.extra["error"] = e.errno
                        sel.unregister(c.sock)
                        continue
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                try:
                    chunk = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk, c.how = b"", "reset"
                if chunk:
                    c.buf += chunk
                    if c.status is None and len(c.buf) >= 12:
                        c.status = status_of(c.buf) or -1
                else:
                    c.t_closed = now()
                    c.how = c.how or "eof"
                    sel.unregister(c.sock)
            if now() >= next_sample and svc.alive():
                sampler.sample(fds=True)
                next_sample = now() + 0.2
    finally:
        sel.close()
        close_all(conns)
    closed_at = now()
    outcome = []
    for c in conns:
        if "error" in c.extra:
            outcome.append("connect failed")
        elif not c.extra.get("connected"):
            outcome.append("connecting")
        elif c.status is not None:
            outcome.append(f"{c.status}")
        elif c.t_closed is not None:
            outcome.append(f"closed ({c.how})")
        else:
            outcome.append("no answer")
    run.figure(f"{attempts} connects held {hold:.0f} s: {counts(outcome)}")
    run.figure(f"service fds {base_fds} at rest, peak {sampler.fds} (limit 256), threads peak {sampler.threads}")

    # Afterwards: alive, and serving, within 5 s.
    deadline = closed_at + 5.0
    svc.require_alive("during the connection flood")
    status = None
    while now() < deadline:
        try:
            status, _, _ = http_request(svc.port, "GET", "/livez", timeout=max(0.1, deadline - now()))
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    recovered = now() - closed_at
    run.check(status == 200, f"GET /livez did not answer 200 within 5 s of closing the flood (last: {status})")
    steps = []
    try:
        status, _, _ = http_request(svc.port, "GET", "/api/v1/public/pizzas/1", timeout=max(0.1, deadline - now()))
        steps.append(("GET /api/v1/public/pizzas/1", status, 200))
        status, body, _ = http_request(svc.port, "POST", "/api/v1/oauth/token", body=DEV_CLIENT,
                                       headers={"Content-Type": "application/x-www-form-urlencoded"},
                                       timeout=max(0.1, deadline - now()))
        steps.append(("POST /api/v1/oauth/token", status, 200))
        token = json.loads(body).get("access_token") if status == 200 else None
        run.check(bool(token), f"no access_token from the token endpoint ({status})")
        if token:
            status, _, _ = http_request(svc.port, "POST", "/api/v1/pizzas", body=json_dumps({"name": "x", "price": 1.5}),
                                        headers={"Content-Type": "application/json",
                                                 "Authorization": f"Bearer {token}"},
                                        timeout=max(0.1, deadline - now()))
            steps.append(("POST /api/v1/pizzas", status, 201))
    except OSError as err:
        run.check(False, f"request failed after the flood: {err}")
    for what, got, want in steps:
        run.check(got == want, f"{what} answered {got}, not {want}, after the flood")
    done = now() - closed_at
    run.check(done <= 5.0, f"serving again took {done:.1f} s after the flood (limit 5 s)")
    m = svc.metrics()
    run.figure(f"/livez 200 {recovered:.2f} s after closing, token+create done at {done:.2f} s")
    run.figure(f"accept pauses {m.get('pizza_api_http_accept_pauses_total', 0):.0f}, "
               f"accepted {m.get('pizza_api_http_connections_accepted_total', 0):.0f}, "
               f"refused {m.get('pizza_api_http_connections_refused_total', 0):.0f}")


# ---------------------------------------------------------------- 4. huge-content-length


@scenario("huge-content-length", databases=("sqlite", "postgres"), budget=60)
def huge_content_length(run):
    svc = run.service({}, nofile=4096)
    # Half the read timeout: a request the listener waited on and then
    # dropped for silence cannot pass for an immediate 413.
    answer_within = 1.0
    lengths = ["18446744073709551615"] * (WORKERS + 1) + ["99999999999"] * 8
    conns = []
    try:
        for length in lengths:
            s = connect(svc.port)
            s.sendall(f"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode())
            conns.append(Conn(s, length, now()))
        watch(conns, max(c.t_first for c in conns) + answer_within)
    finally:
        close_all(conns)
    outcome, took = [], []
    for c in conns:
        if c.t_closed is None or c.t_closed > c.t_first + answer_within:
            outcome.append(f"{c.status}, left open" if c.status else "no answer, left open")
        elif c.status is None:
            outcome.append(f"closed ({c.how})")
        else:
            outcome.append(f"{c.status}")
        if c.t_closed is not None:
            took.append(c.t_closed - c.t_first)
    run.figure(f"{len(lengths)} huge Content-Length: {counts(outcome)}"
               + (f", closed within {ms(max(took))}" if took else ""))
    wrong = [o for o in outcome if o != "413" and not o.startswith("closed")]
    run.check(not wrong, f"{len(wrong)} of {len(conns)} not answered 413 or closed within "
                         f"{answer_within:.0f} s ({counts(outcome)})")

    svc.require_alive("after the huge Content-Length requests")
    m = svc.metrics()
    missing = [k for k in ("pizza_api_workers", "pizza_api_worker_restarts_total") if k not in m]
    if missing:
        raise Fail(f"/metrics lacks {', '.join(missing)}")
    workers = m["pizza_api_workers"]
    restarts = m["pizza_api_worker_restarts_total"]
    run.figure(f"workers {workers:.0f}, restarts {restarts:.0f}, "
               f"413 counted {m.get(REJECTED_413, 0):.0f}")
    run.check(workers == WORKERS, f"pizza_api_workers is {workers:.0f}, not {WORKERS}")
    run.check(restarts == 0, f"pizza_api_worker_restarts_total is {restarts:.0f}, not 0")

    results = [None] * WORKERS
    barrier = threading.Barrier(WORKERS)

    def read_one(i):
        try:
            barrier.wait(timeout=5)
            results[i] = http_request(svc.port, "GET", "/api/v1/public/pizzas/1", timeout=5)[::2]
        except Exception as err:  # noqa: BLE001 - reported below
            results[i] = (type(err).__name__, 0)

    threads = [threading.Thread(target=read_one, args=(i,), daemon=True) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    statuses = [r[0] if r else "no answer" for r in results]
    slowest = max((r[1] for r in results if r), default=0)
    run.figure(f"{WORKERS} concurrent reads: {counts(statuses)}, slowest {ms(slowest)}")
    run.check(all(s == 200 for s in statuses), f"concurrent reads answered {counts(statuses)}")
    hwm = svc.status()["VmHWM"]
    run.figure(f"VmHWM {mib(hwm)}")
    run.check(hwm < 64 * 1024, f"VmHWM {mib(hwm)} >= 64 MiB")

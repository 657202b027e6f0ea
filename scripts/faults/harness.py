"""Machinery shared by the fault scenarios (scripts/faults/scenarios.py):
the databases a scenario can run on (and their faults: PostgreSQL stopped,
restarted or frozen; direct queries), the service under test, raw-socket,
keep-alive and http.client helpers, tokens (from the service, or minted),
/proc and /metrics readings, and the runner's Run object.

Standard library only. Everything is on 127.0.0.1; every wait has a deadline.
"""

import base64
import glob
import hashlib
import hmac
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PG_CLUSTER = ROOT / "scripts" / "pg-cluster.sh"

# 48 characters; only ever used against throwaway local databases.
JWT_SECRET = "faults-only-jwt-secret-0123456789abcdefghijklmno"
assert len(JWT_SECRET) == 48

# What every run of the service gets unless the scenario overrides it.
WORKERS = 8
BASE_ENV = {
    "APP_ENV": "development",
    "APP_HOST": HOST,
    "JWT_SECRET": JWT_SECRET,
    "WORKERS": str(WORKERS),
    "HTTP_READ_TIMEOUT_MS": "2000",
    "HTTP_KEEPALIVE_TIMEOUT_MS": "2000",
    "LOG_LEVEL": "warn",
    "SHUTDOWN_TIMEOUT": "3",
    "BOOTSTRAP_CLIENT_SECRET": "faults-only-bootstrap-secret",
    "BCRYPT_COST": "10",
}

# The dev seed's admin client (README).
DEV_CLIENT = "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123"


class Fail(Exception):
    """A scenario cannot go on; the message is the FAIL line's reason."""


class Skip(Exception):
    """A scenario cannot run here (only outside CI)."""


def now():
    return time.monotonic()


def free_port():
    """A port the kernel says is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile():
    """Raises this process's RLIMIT_NOFILE soft limit to its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------- figures


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def latency_summary(samples):
    if not samples:
        return "none"
    return (f"{len(samples)} req, p50 {ms(percentile(samples, 50))}, "
            f"p99 {ms(percentile(samples, 99))}, max {ms(max(samples))}")


# ---------------------------------------------------------------- HTTP


def connect(port, timeout=5.0):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def http_request(port, method, path, body=None, headers=None, timeout=5.0):
    """One request on a new connection, closed afterwards.
    Returns (status, body bytes, seconds from connect to full answer)."""
    started = now()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, now() - started
    finally:
        conn.close()


def status_of(buf):
    """The status code of a response whose first bytes are buf, or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else None


class ConnectionClosed(Exception):
    pass


def read_response(sock, deadline):
    """Reads one whole response (Content-Length framed) from a blocking
    socket. Returns (status, head bytes, body bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += _recv_some(sock, deadline)
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    length = int(m.group(1)) if m else 0
    while len(body) < length:
        body += _recv_some(sock, deadline)
    return status_of(head), head, body


def _recv_some(sock, deadline):
    left = deadline - now()
    if left <= 0:
        raise TimeoutError("no complete answer before the deadline")
    sock.settimeout(left)
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionClosed("the server closed the connection")
    return chunk


class KeepAlive:
    """One client connection reused across requests, reopened after the server
    closes it (or after a failure). request() gives (status, head, body) or
    raises OSError / ConnectionClosed / TimeoutError.

    limit(started) -> seconds: how long a request that started at `started`
    may take; it is read again every 0.2 s while waiting, so a scenario can
    lengthen the wait of requests already in flight."""

    def __init__(self, port, timeout=5.0, limit=None):
        self.port = port
        self.limit = limit or (lambda _started: timeout)
        self.sock = None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def request(self, method, path, body=b"", headers=None, started=None):
        started = now() if started is None else started
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            reused = self.sock is not None
            if self.sock is None:
                self.sock = connect(self.port, timeout=max(0.05, self.limit(started) - (now() - started)))
            got = []
            try:
                self.sock.sendall(raw)
                status, head_bytes, body_bytes = self._read(started, got)
            except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as err:
                self.close()
                # A kept connection the server closed while idle: the request
                # never reached it, so it is sent again once on a new one.
                if reused and attempt == 1 and not got:
                    continue
                raise err
            except BaseException:
                self.close()
                raise
            if re.search(rb"(?im)^connection:\s*close\s*$", head_bytes):
                self.close()
            return status, head_bytes, body_bytes
        raise ConnectionClosed("unreachable")

    def _read(self, started, got):
        buf = b""
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                length = int(m.group(1)) if m else 0
                if len(rest) >= length:
                    return status_of(head), head, rest[:length]
            left = started + self.limit(started) - now()
            if left <= 0:
                raise TimeoutError(f"no answer within {now() - started:.1f} s")
            self.sock.settimeout(min(left, 0.2))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionClosed("the server closed the connection")
            got.append(len(chunk))
            buf += chunk


def form_token(port, form=DEV_CLIENT, timeout=10.0):
    """(status, access_token or None, seconds) for a client-credentials form."""
    status, body, took = http_request(port, "POST", "/api/v1/oauth/token", body=form,
                                      headers={"Content-Type": "application/x-www-form-urlencoded"},
                                      timeout=timeout)
    token = None
    if status == 200:
        token = json.loads(body).get("access_token")
    return status, token, took


def dev_token(port):
    status, token, _ = form_token(port)
    if not token:
        raise Fail(f"no token for dev-client (status {status})")
    return token


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(claims, secret=JWT_SECRET):
    """An HS512 JWT signed with `secret`, as the service signs its own."""
    header = _b64url(json.dumps({"alg": "HS512", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha512).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def parse_metrics(text):
    """Prometheus text -> {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


# ---------------------------------------------------------------- /proc


def proc_status(pid):
    """VmRSS and VmHWM (KiB) and Threads of a process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def proc_alive(pid):
    """False for a process that has exited, zombie included."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid):
    """User + system CPU time a process has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def listener_owned_by(pid, port):
    """True when the socket listening on 127.0.0.1:port belongs to pid."""
    inodes = set()
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


# ---------------------------------------------------------------- databases


class Sqlite:
    """A fresh SQLite file per service start, in the run's temp dir."""

    name = "sqlite"

    def __init__(self, work):
        self.work = Path(work)
        self.count = 0

    def fresh(self, label):
        self.count += 1
        path = self.work / f"{label}-{self.count}.sqlite"
        return {"DB_DRIVER": "sqlite", "DB_PATH": str(path)}

    @staticmethod
    def query(db_env, sql):
        """Rows of one statement, read from the file directly."""
        conn = sqlite3.connect(db_env["DB_PATH"], timeout=10)
        try:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()


class Postgres:
    """The private cluster scripts/test-faults.sh started (PIZZA_PG_DIR,
    PIZZA_PG_PORT in the environment); a fresh database per service start.

    Hooks for database-fault scenarios: pg_ctl("stop"|"restart", ...),
    cluster("start") (scripts/pg-cluster.sh; its "stop" also deletes the
    cluster: never from a scenario), freeze()/thaw() (SIGSTOP/SIGCONT of every
    server process), postmaster_pid(), query(db_env, sql) (psql)."""

    name = "postgres"

    def __init__(self):
        self.dir = Path(os.environ["PIZZA_PG_DIR"])
        self.port = int(os.environ["PIZZA_PG_PORT"])
        self.count = 0
        lines = self.cluster("env", capture=True).splitlines()
        self.env = dict(line.split("=", 1) for line in lines if "=" in line)

    def cluster(self, *args, capture=False, timeout=90):
        result = subprocess.run([str(PG_CLUSTER), *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, timeout=timeout)
        if result.returncode != 0:
            raise Fail(f"pg-cluster.sh {' '.join(args)} failed: {result.stderr.strip()[-300:]}")
        return result.stdout or ""

    def fresh(self, label):
        self.count += 1
        name = re.sub(r"[^a-z0-9_]", "_", f"faults_{label}_{self.count}".lower())
        self.cluster("createdb", name)
        return dict(self.env, DB_DRIVER="postgres", DB_NAME=name)

    def postmaster_pid(self):
        with open(self.dir / "data" / "postmaster.pid") as f:
            return int(f.readline())

    # -- server faults. pg-cluster.sh's own `stop` also deletes the cluster,
    # so stopping and restarting the server go through pg_ctl directly (as
    # the cluster's owner); `start` is pg-cluster.sh's (idempotent, the same
    # port and options).

    def pg_ctl(self, *args, timeout=60):
        """Runs pg_ctl -D DATA ARGS... -w as the cluster's owner."""
        cmd = [str(pg_bin() / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "-t", str(int(timeout)), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, timeout=timeout + 10)
        if result.returncode != 0:
            raise Fail(f"pg_ctl {' '.join(args)} failed: {result.stderr.strip()[-300:]}")

    def running(self):
        try:
            return proc_alive(self.postmaster_pid())
        except (OSError, ValueError):
            return False

    def ensure_running(self):
        """Starts the server again when a scenario left it stopped."""
        if not self.running():
            self.cluster("start")

    def server_pids(self):
        """The postmaster and its children (backends, checkpointer, ...)."""
        pm = self.postmaster_pid()
        return [pm] + children_of(pm)

    def freeze(self, known=None):
        """SIGSTOPs the postmaster, then each of its children (a stopped
        postmaster forks no new ones): those in `known` (server_pids() taken
        beforehand, so the stops land within a millisecond), then any other.
        Returns the PIDs stopped; pass them to thaw(), which must run
        whatever happens."""
        pm = self.postmaster_pid()
        known = [pid for pid in (known if known is not None else children_of(pm)) if pid != pm]
        stopped = []
        os.kill(pm, signal.SIGSTOP)
        stopped.append(pm)
        for pid in known:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        for _ in range(2):  # again, for a child forked just before the stop
            for pid in children_of(pm):
                if pid not in stopped:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
                    except ProcessLookupError:
                        pass
        return stopped

    def thaw(self, pids=()):
        """SIGCONTs the given PIDs and every process of the cluster now."""
        targets = list(pids)
        try:
            targets += self.server_pids()
        except (OSError, ValueError):
            pass
        for pid in dict.fromkeys(reversed(targets)):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def query(self, db_env, sql):
        """Rows of one statement (psql, unaligned, tab-separated)."""
        env = dict(os.environ, PGPASSWORD=db_env["DB_PASSWORD"], PGCONNECT_TIMEOUT="10")
        result = subprocess.run([str(pg_bin() / "psql"), "-X", "-q", "-h", db_env["DB_HOST"], "-p", db_env["DB_PORT"],
                                 "-U", db_env["DB_USER"], "-d", db_env["DB_NAME"], "-tA", "-F", "\t",
                                 "-v", "ON_ERROR_STOP=1", "-c", sql],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60)
        if result.returncode != 0:
            raise Fail(f"psql failed: {result.stderr.strip()[-300:]}")
        return [tuple(line.split("\t")) for line in result.stdout.splitlines() if line]


def children_of(pid):
    """PIDs whose parent is pid, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def pg_bin():
    """PostgreSQL's binaries, found as scripts/pg-cluster.sh finds them."""
    if os.environ.get("PG_BIN") and os.access(os.path.join(os.environ["PG_BIN"], "initdb"), os.X_OK):
        return Path(os.environ["PG_BIN"])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p)])
    if candidates:
        return Path(candidates[-1])
    raise Fail("PostgreSQL binaries not found (set PG_BIN)")


class Unavailable:
    """A database that could not be set up; its scenarios FAIL under CI=true
    and are skipped elsewhere."""

    def __init__(self, name, reason):
        self.name = name
        self.reason = reason


# ---------------------------------------------------------------- the service


class Service:
    """One pizza-api process on a free port of 127.0.0.1."""

    def __init__(self, ctx, label, db_env, env, nofile):
        self.ctx = ctx
        self.label = label
        self.log_path = Path(ctx.work) / f"{label}.log"
        self.port = free_port()
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.env.update(BASE_ENV)
        self.env.update(db_env)
        self.db_env = dict(db_env)  # to start another service on the same database
        self.env.update(env)
        self.env["APP_PORT"] = str(self.port)
        self.nofile = nofile
        self.proc = None
        self.stopped = False

    @property
    def pid(self):
        return self.proc.pid

    def start(self, ready_within=60.0):
        self.launch()
        return self.wait_ready(ready_within)

    def launch(self):
        """Starts the process without waiting for it (see wait_ready)."""
        rundir = Path(self.ctx.work) / f"{self.label}.cwd"  # no stray .env
        rundir.mkdir(exist_ok=True)
        nofile = self.nofile

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.ctx.bin], cwd=rundir, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, preexec_fn=limits)
        finally:
            log.close()
        self.ctx.record_pid(self.proc.pid)
        return self

    def wait_ready(self, ready_within=60.0):
        """Waits for GET /livez 200 from this process on its port."""
        deadline = now() + ready_within
        while True:
            if self.proc.poll() is not None:
                self.stopped = True  # reported here, not again by Run.finish
                lines = self.log_text().splitlines()
                bind = [line for line in lines if re.search(r"cannot listen|address (already )?in use", line, re.I)]
                if bind:
                    raise Fail(f"the service could not bind APP_PORT={self.port}: {bind[-1].strip()}")
                raise Fail(f"the service (APP_PORT={self.port}) exited with code {self.proc.returncode} "
                           f"before answering: {' / '.join(lines[-3:])}")
            try:
                status, _, _ = http_request(self.port, "GET", "/livez", timeout=1.0)
                if status == 200:
                    break
            except OSError:
                pass
            if now() > deadline:
                raise Fail(f"no 200 from GET /livez on APP_PORT={self.port} within {ready_within:.0f} s")
            time.sleep(0.05)
        if not listener_owned_by(self.pid, self.port):
            raise Fail(f"APP_PORT={self.port} is answered by another process, not the service (PID {self.pid})")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and proc_alive(self.pid)

    def require_alive(self, when):
        if not self.alive():
            raise Fail(f"the service died {when} (exit code {self.proc.poll()}): {self.log_tail(3).strip()}")

    def status(self):
        return proc_status(self.pid)

    def metrics(self, timeout=5.0):
        status, body, _ = http_request(self.port, "GET", "/metrics", timeout=timeout)
        if status != 200:
            raise Fail(f"GET /metrics answered {status}")
        return parse_metrics(body.decode())

    def kill(self, sig=signal.SIGKILL):
        """For fault scenarios (e.g. kill -9 under load). SIGKILL waits for
        the exit and counts as a deliberate stop, not as dying on its own."""
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)
            self.stopped = True

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s. Returns the exit code it had
        before we stopped it, or None when it was still running."""
        if self.proc is None or self.stopped:
            return None
        self.stopped = True
        exited_early = self.proc.poll()
        if exited_early is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return exited_early

    def log_tail(self, lines=5):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------- the runner


class Context:
    """What the whole run shares."""

    def __init__(self, bin_path, work, pid_file):
        self.bin = str(bin_path)
        self.work = str(work)
        self.pid_file = pid_file

    def record_pid(self, pid):
        # The shell's trap kills whatever is listed here and still runs this binary.
        with open(self.pid_file, "a") as f:
            f.write(f"{pid}\n")


class Run:
    """One scenario on one database: the services it started, its figures
    (printed on its PASS or FAIL line) and the assertions that failed."""

    def __init__(self, ctx, scenario, db):
        self.ctx = ctx
        self.scenario = scenario
        self.db = db
        self.name = f"{scenario}/{db.name}"
        self.figures = []
        self.failures = []
        self.services = []

    def service(self, env=None, nofile=4096, ready_within=60.0, db_env=None, launch_only=False):
        """A service on a fresh database, or on db_env (another service's
        .db_env: the same database). launch_only: started, not waited for."""
        label = f"{self.scenario}-{self.db.name}-{len(self.services) + 1}"
        svc = Service(self.ctx, label, db_env if db_env is not None else self.db.fresh(label), env or {}, nofile)
        self.services.append(svc)
        if launch_only:
            return svc.launch()
        return svc.start(ready_within)

    def query(self, svc, sql):
        """Rows of one SQL statement, run directly on svc's database."""
        return self.db.query(svc.db_env, sql)

    def figure(self, text):
        self.figures.append(text)

    def check(self, ok, reason):
        if not ok:
            self.failures.append(reason)
        return ok

    def finish(self):
        """Stops every service; one that had died on its own, or logged a
        panic, is a failure."""
        for svc in self.services:
            exited = svc.stop()
            if exited is not None:
                self.failures.append(f"the service had exited on its own (code {exited}): "
                                     f"{svc.log_tail(3).strip()} (log {svc.log_path.name})")
            text = svc.log_text()
            panics = [line for line in text.splitlines() if "panicked" in line]
            if panics:
                self.failures.append(f"{len(panics)} panic(s) in the service log, first: {panics[0][:200]}")
            errors = sum(1 for line in text.splitlines() if " ERROR " in line)
            if errors:
                self.figure(f"{errors} ERROR line(s) in the service log")


def json_dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def exit_on_term():
    """SIGTERM (from the shell's trap) unwinds like an exception, so every
    started service is stopped on the way out."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def say(text):
    print(text, flush=True)


def warn(text):
    print(f"test-faults: {text}", file=sys.stderr, flush=True)

"""A token-endpoint flood in its own process: CONNS keep-alive connections
each send POST /api/v1/oauth/token (client_credentials for CLIENT_ID with a
different wrong secret every time) again as soon as the previous answer is
in, for SECONDS; a connection the server closes is opened again. Prints
{"statuses": {"401": n, ...}, "errors": {"reset": n, ...}, "connects": n,
 "seconds": s}.

    python3 flood.py PORT SECONDS CONNS CLIENT_ID
"""

import json
import re
import selectors
import socket
import sys
import time


def main():
    port, seconds, n_conns, client_id = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    statuses, errors = {}, {}
    connects = 0
    counter = 0
    sel = selectors.DefaultSelector()

    def request():
        nonlocal counter
        counter += 1
        body = f"grant_type=client_credentials&client_id={client_id}&client_secret=wrong-{counter}".encode()
        return (f"POST /api/v1/oauth/token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def open_one():
        nonlocal connects
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.connect(("127.0.0.1", port))
        except OSError as err:
            errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
            s.close()
            return
        connects += 1
        s.setblocking(False)
        try:
            s.send(request())
        except OSError:
            errors["send"] = errors.get("send", 0) + 1
            s.close()
            return
        sel.register(s, selectors.EVENT_READ, {"buf": b""})

    def drop(s, kind=None):
        if kind:
            errors[kind] = errors.get(kind, 0) + 1
        sel.unregister(s)
        s.close()

    started = time.monotonic()
    end = started + seconds
    for _ in range(n_conns):
        open_one()
    while time.monotonic() < end:
        missing = n_conns - len(sel.get_map())
        for _ in range(missing):
            open_one()
        for key, _ in sel.select(0.05):
            s, state = key.fileobj, key.data
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                drop(s, "reset")
                continue
            if not chunk:
                drop(s, "closed before an answer" if state["buf"] else None)
                continue
            state["buf"] += chunk
            head, sep, rest = state["buf"].partition(b"\r\n\r\n")
            if not sep:
                continue
            m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            if len(rest) < (int(m.group(1)) if m else 0):
                continue
            status = re.match(rb"HTTP/1\.[01] (\d{3})", head)
            key_ = status.group(1).decode() if status else "?"
            statuses[key_] = statuses.get(key_, 0) + 1
            state["buf"] = b""
            if re.search(rb"(?im)^connection:\s*close\s*$", head) or time.monotonic() >= end:
                drop(s)
                continue
            try:
                s.send(request())
            except OSError:
                drop(s, "send")
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
    json.dump({"statuses": statuses, "errors": errors, "connects": connects,
               "seconds": time.monotonic() - started}, sys.stdout)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the hostile-request corpus: tests/corpus/cases/NNN-name.http (the
exact bytes sent on one connection) and tests/corpus/expected.tsv
(case<TAB>expect<TAB>why). See README.md next to this file.

Run it from anywhere: `python3 tests/corpus/generate.py`. It is
deterministic (random bytes come from a fixed seed), so re-running it
changes nothing unless a case was added. Add new cases at the END of
`build()` so that existing numbers never move.
"""

import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "cases")
MAX_FILE = 70 * 1024
MAX_TOTAL = 2 * 1024 * 1024

# Placeholder the runner replaces with a freshly issued admin access token.
ADMIN_TOKEN = b"@@ADMIN_TOKEN@@"

MIB = 1024 * 1024


def b(x):
    return x if isinstance(x, bytes) else x.encode("utf-8")


def head(line, headers=(), host=True, close=True, version=b"HTTP/1.1"):
    """A request head. `line` is "METHOD TARGET" (the version is appended)
    or a full request line when `version` is None."""
    out = b(line) + (b" " + version if version is not None else b"") + b"\r\n"
    if host:
        out += b"Host: x\r\n"
    for h in headers:
        out += b(h) + b"\r\n"
    if close:
        out += b"Connection: close\r\n"
    return out + b"\r\n"


def req(line, headers=(), body=None, host=True, close=True, version=b"HTTP/1.1", length=True):
    hs = list(headers)
    if body is not None and length:
        hs.append("Content-Length: %d" % len(body))
    return head(line, hs, host=host, close=close, version=version) + (body or b"")


def get(target, headers=(), **kw):
    return req("GET " + target if isinstance(target, str) else b"GET " + target, headers, **kw)


def chunked(line, body, headers=(), close=True):
    return head(line, list(headers) + ["Transfer-Encoding: chunked"], close=close) + body


def authed_json(method, path, body, content_type="application/json"):
    hs = [b"Authorization: Bearer " + ADMIN_TOKEN, "Content-Type: " + content_type]
    return req(method + " " + path, hs, body=b(body))


def json_post(path, body, content_type="application/json"):
    return req("POST " + path, ["Content-Type: " + content_type], body=b(body))


def form_token(body):
    return json_post("/api/v1/oauth/token", body, "application/x-www-form-urlencoded")


# A TLS 1.2/1.3 ClientHello as a browser would open an https:// connection
# on the plain-HTTP port (record header 16 03 01, handshake type 01).
def tls_client_hello():
    rnd = random.Random(443)
    sni = b"localhost"
    server_name = b"\x00" + len(sni).to_bytes(2, "big") + sni
    sni_ext = b"\x00\x00" + (len(server_name) + 2).to_bytes(2, "big") + len(server_name).to_bytes(2, "big") + server_name
    ciphers = b"\x13\x01\x13\x02\x13\x03\xc0\x2b\xc0\x2f\xc0\x2c\xc0\x30\xcc\xa9\xcc\xa8"
    body = (
        b"\x03\x03"
        + bytes(rnd.getrandbits(8) for _ in range(32))
        + b"\x20"
        + bytes(rnd.getrandbits(8) for _ in range(32))
        + len(ciphers).to_bytes(2, "big")
        + ciphers
        + b"\x01\x00"
        + len(sni_ext).to_bytes(2, "big")
        + sni_ext
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64\x00\x04\x40\x00\x00\x00\x00\x02\x00\x00\x00\x00"


def build():
    cases = []

    def add(name, data, expect, why):
        cases.append((name, b(data), str(expect), why))

    rnd = random.Random(20261127)

    # ------------------------------------------------------------------
    # Baseline: well-formed requests the application answers.
    add("app-livez", get("/livez"), 200, "baseline: a well-formed GET")
    add("app-head-livez", req("HEAD /livez"), 200, "HEAD is answered like GET, without a body")
    add("app-pizza-1", get("/api/v1/public/pizzas/1"), 200, "the dev seed holds pizza 1")
    add("app-head-pizza-1", req("HEAD /api/v1/public/pizzas/1"), 200, "HEAD on a pizza")
    add("app-list", get("/api/v1/public/pizzas"), 200, "the public list")
    add("app-health", get("/health"), 200, "readiness with the database")
    add("app-metrics", get("/metrics"), 200, "metrics")
    add("app-openapi", get("/openapi.json"), 200, "a larger body (the OpenAPI document)")
    add("app-head-openapi", req("HEAD /openapi.json"), 200, "HEAD of a large document: no body follows")
    add("app-head-nope", req("HEAD /nope"), 404, "HEAD on an unknown path")
    add("app-head-pizzas-post-only", req("HEAD /api/v1/pizzas"), 405, "HEAD where only POST is served")
    add("app-nope", get("/nope"), 404, "unknown path")
    add("app-root", get("/"), 404, "nothing is served at /")
    add("app-trailing-slash", get("/livez/"), 404, "an empty path segment is a 404")
    add("app-double-slash", get("//livez"), 404, "an empty path segment is a 404")
    add("app-dot-segment", get("/./livez"), 404, "dot segments are not normalised")
    add("app-dotdot-segment", get("/../livez"), 404, "dot-dot segments are not normalised")
    add("app-traversal", get("/../../../../etc/passwd"), 404, "path traversal")
    add("app-encoded-traversal", get("/%2e%2e/%2e%2e/etc/passwd"), 404, "percent-encoded traversal")
    add("app-encoded-slash", get("/api%2Fv1%2Fpublic%2Fpizzas"), 404, "an encoded slash is not a separator")
    add("app-query-empty", get("/livez?"), 200, "an empty query string")
    add("app-query-double", get("/livez??x=1"), 200, "a query beginning with ?")
    add("app-fragment", get("/livez#frag"), 404, "a fragment is part of the path the router sees")
    add("app-get-with-body", req("GET /livez", body=b"ignored body"), 200, "a GET may carry a body, which is ignored")
    add("app-get-cl-zero", req("GET /livez", ["Content-Length: 0"]), 200, "Content-Length: 0")
    add("app-cl-leading-zeros", req("POST /livez", ["Content-Length: 0005"]) + b"hello", 405, "Content-Length 0005 is all digits: 5")
    add("app-cl-ows", req("POST /livez", ["Content-Length:   5   "]) + b"hello", 405, "optional whitespace around a Content-Length value")
    add("app-header-tab-in-value", get("/livez", ["X-Tab: a\tb"]), 200, "TAB is allowed inside a header value")
    add("app-header-tab-ows", get("/livez", ["X-Tab:\tvalue\t"]), 200, "TAB as optional whitespace around a value")
    add("app-header-empty-value", get("/livez", ["X-Empty:"]), 200, "an empty header value")
    add("app-header-no-space", get("/livez", ["X-A:b"]), 200, "no space after the colon")
    add("app-host-lowercase", req("GET /livez", ["host: x"], host=False), 200, "header names are case-insensitive")
    add("app-connection-close-mixed-case", req("GET /livez", ["Connection: Close"], close=False) + get("/livez"), 200,
        "Connection: Close (any case) closes after the first answer")
    add("app-header-8k-value", get("/livez", ["X-Big: " + "a" * 8000]), 200, "an 8 KiB header value is within the head limit")
    add("app-head-15k", get("/livez", ["X-H%d: %s" % (i, "b" * 1000) for i in range(15)]), 200,
        "15 KiB of headers: under the 16 KiB head limit")
    add("app-url-15k", get("/livez?x=" + "a" * 15000), 200, "a 15 KiB URL fits in the head limit")
    add("app-100-fields", get("/livez", ["X-F%d: 1" % i for i in range(98)]), 200,
        "exactly 100 header fields (98 + Host + Connection) are allowed")

    # ------------------------------------------------------------------
    # Line endings.
    add("lf-only", b"GET /livez HTTP/1.1\nHost: x\nConnection: close\n\n", 400, "bare LF line endings")
    add("lf-request-line", b"GET /livez HTTP/1.1\nHost: x\r\nConnection: close\r\n\r\n", 400, "bare LF after the request line")
    add("lf-one-header", b"GET /livez HTTP/1.1\r\nHost: x\nConnection: close\r\n\r\n", 400, "bare LF after one header")
    add("lf-final", b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\n", 400, "bare LF as the empty line")
    add("lf-final-both", b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\n\n", 400, "two bare LFs end the head")
    add("lfcr", b"GET /livez HTTP/1.1\n\rHost: x\r\n\r\n", 400, "LF CR instead of CR LF")
    add("cr-only", b"GET /livez HTTP/1.1\rHost: x\rConnection: close\r\r", 400, "bare CR line endings")
    add("cr-request-line", b"GET /livez HTTP/1.1\rHost: x\r\nConnection: close\r\n\r\n", 400, "CR not followed by LF after the request line")
    add("cr-in-value", get("/livez", ["X-A: a\rb"]), 400, "CR inside a header value")
    add("cr-in-name", get("/livez", ["X\rA: b"]), 400, "CR inside a header name")
    add("cr-in-path", b"GET /li\rvez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "CR inside the request target")
    add("cr-cr-lf", b"GET /livez HTTP/1.1\r\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "CR CR LF")
    add("cr-before-final", b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\r\n", 400, "CR CR LF as the empty line")
    add("lf-in-value-smuggle", b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: a\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", 400,
        "a bare LF inside a value that would hide a Transfer-Encoding")

    # ------------------------------------------------------------------
    # Control bytes in the head.
    for c in [0x00, 0x01, 0x07, 0x08, 0x0B, 0x0C, 0x1B, 0x1F, 0x7F]:
        add("ctl-%02x-in-value" % c, get("/livez", [b"X-A: a" + bytes([c]) + b"b"]), 400, "control byte 0x%02X in a header value" % c)
    for c in [0x00, 0x01, 0x09, 0x0B, 0x7F]:
        add("ctl-%02x-in-name" % c, get("/livez", [b"X-" + bytes([c]) + b"A: b"]), 400, "control byte 0x%02X in a header name" % c)
    for c in [0x00, 0x01, 0x09, 0x0C, 0x1F, 0x7F]:
        add("ctl-%02x-in-path" % c, b"GET /livez" + bytes([c]) + b"x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400,
            "control byte 0x%02X in the request target" % c)
    add("ctl-nul-in-query", b"GET /api/v1/public/pizzas?name=a\x00b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "a raw NUL in the query")
    add("ctl-nul-in-method", b"G\x00T /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "a NUL in the method")
    add("ctl-nul-in-version", b"GET /livez HTTP/1.1\x00\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "a NUL after the version")
    add("ctl-nul-first-byte", b"\x00GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "a NUL before the request")
    add("ctl-nul-in-host", req("GET /livez", [b"Host: x\x00y"], host=False), 400, "a NUL in the Host header")
    add("ctl-nul-in-cl", b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 5\x00\r\nConnection: close\r\n\r\nhello", 400, "a NUL in Content-Length")
    add("ctl-nul-in-te", chunked("POST /livez", b"0\r\n\r\n", [b"X-A: 1", ]).replace(b"chunked", b"chunked\x00"), 400, "a NUL after chunked")
    add("ctl-tab-in-method", b"GET\t/livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "TAB instead of SP in the request line")
    add("ctl-tab-before-version", b"GET /livez\tHTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "TAB instead of SP before the version")
    add("ctl-vt-in-request-line", b"GET\x0b/livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "VT in the request line")
    add("ctl-esc-sequence", get("/livez", [b"User-Agent: \x1b[31mred\x1b[0m"]), 400, "terminal escape sequence in a header value")
    add("ctl-nul-all", b"\x00" * 4096, 400, "4 KiB of NUL bytes")
    add("ctl-nul-in-auth", req("GET /api/v1/clients", [b"Authorization: Bearer a\x00b"]), 400, "a NUL in Authorization")
    add("ctl-binary-body-ok", req("POST /livez", body=bytes(range(256))), 405, "control bytes in a body are fine: only the head is checked")

    # ------------------------------------------------------------------
    # Bytes >= 0x80 in the request line and in headers.
    utf8_targets = [
        ("utf8-path", "/api/v1/public/pizzas/\u00e9".encode()),
        ("utf8-path-emoji", "/\U0001F355".encode()),
        ("utf8-query", "/api/v1/public/pizzas?name=\u00c4pfel".encode()),
        ("utf8-query-cjk", "/api/v1/public/pizzas?name=\u62ab\u85a9".encode()),
        ("utf8-fullwidth-slash", "/livez\uff0fx".encode()),
        ("utf8-nbsp-in-path", "/livez\u00a0".encode()),
        ("utf8-bom-path", b"/\xef\xbb\xbflivez"),
        ("invalid-utf8-path-ff", b"/api/v1/public/pizzas/\xff"),
        ("invalid-utf8-path-fe", b"/\xfe\xff"),
        ("invalid-utf8-query", b"/api/v1/public/pizzas?name=\xc3\x28"),
        ("invalid-utf8-overlong-slash", b"/\xc0\xaf..\xc0\xafetc"),
        ("invalid-utf8-surrogate", b"/\xed\xa0\x80"),
        ("invalid-utf8-truncated", b"/livez\xe2\x82"),
        ("invalid-utf8-continuation", b"/\x80\x80\x80"),
        ("invalid-utf8-5-byte", b"/\xf8\x88\x80\x80\x80"),
        ("latin1-path", b"/pizz\xe0"),
    ]
    for name, target in utf8_targets:
        add(name, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "a byte >= 0x80 in the request target")
    add("utf8-method", "G\u00c9T /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 400, "a non-ASCII method")
    add("utf8-version", "GET /livez HTTP/1\u00b71\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 400, "a non-ASCII version")
    add("high-byte-method", b"\xffGET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "0xFF before the method")
    add("utf8-header-value", get("/livez", ["X-Name: caf\u00e9".encode()]), 400, "UTF-8 in a header value")
    add("latin1-header-value", get("/livez", [b"X-Name: caf\xe9"]), 400, "Latin-1 in a header value")
    add("invalid-utf8-header-value", get("/livez", [b"X-Name: \xff\xfe"]), 400, "invalid UTF-8 in a header value")
    add("utf8-header-name", get("/livez", ["X-N\u00e4me: x".encode()]), 400, "UTF-8 in a header name")
    add("high-byte-header-name", get("/livez", [b"\x80: x"]), 400, "0x80 as a header name")
    add("utf8-host", req("GET /livez", ["Host: b\u00fccher.example".encode()], host=False), 400, "UTF-8 in Host")
    add("utf8-auth", req("GET /api/v1/clients", ["Authorization: Bearer \u00e9".encode()]), 400, "UTF-8 in Authorization")
    add("utf8-content-length", req("POST /livez", ["Content-Length: \uff15".encode()]) + b"hello", 400, "a full-width digit in Content-Length")
    add("utf8-te", head("POST /livez", ["Transfer-Encoding: chunk\u00e9d".encode()]) + b"0\r\n\r\n", 400, "UTF-8 in Transfer-Encoding")
    add("utf8-nbsp-before-colon", get("/livez", ["X-A\u00a0: b".encode()]), 400, "a non-breaking space before the colon")
    add("utf8-body-ok", req("POST /livez", body="\u00e9\U0001F355".encode()), 405, "UTF-8 in a body is fine")

    # ------------------------------------------------------------------
    # Header syntax.
    add("space-before-colon", get("/livez", ["X-A : b"]), 400, "whitespace between header name and colon")
    add("tab-before-colon", get("/livez", ["X-A\t: b"]), 400, "TAB between header name and colon")
    add("space-before-colon-host", req("GET /livez", ["Host : x"], host=False), 400, "Host with whitespace before the colon")
    add("space-before-colon-cl", req("POST /livez", ["Content-Length : 5"]) + b"hello", 400, "Content-Length with whitespace before the colon")
    add("space-before-colon-te", head("POST /livez", ["Transfer-Encoding : chunked"]) + b"0\r\n\r\n", 400,
        "Transfer-Encoding with whitespace before the colon (a smuggling classic)")
    add("obs-fold-space", get("/livez", ["X-A: b", " continued"]), 400, "obs-fold: a header line starting with a space")
    add("obs-fold-tab", get("/livez", ["X-A: b", "\tcontinued"]), 400, "obs-fold: a header line starting with a TAB")
    add("obs-fold-first-header", b"GET /livez HTTP/1.1\r\n Host: x\r\nConnection: close\r\n\r\n", 400, "the first header line starts with a space")
    add("obs-fold-te", head("POST /livez", ["X-A: b", " Transfer-Encoding: chunked"]) + b"0\r\n\r\n", 400, "a folded Transfer-Encoding")
    add("obs-fold-cl", req("POST /livez", ["Content-Length:", " 5"]) + b"hello", 400, "a folded Content-Length value")
    add("header-no-colon", get("/livez", ["NoColonHere"]), 400, "a header line without a colon")
    add("header-empty-name", get("/livez", [": value"]), 400, "an empty header name")
    add("header-space-in-name", get("/livez", ["X A: b"]), 400, "whitespace inside a header name")
    add("header-only-colon", get("/livez", [":"]), 400, "a header line that is only a colon")
    add("header-space-line", get("/livez", [" "]), 400, "a header line that is only a space")

    # ------------------------------------------------------------------
    # Malformed request lines.
    def raw_line(line):
        return b(line) + b"\r\nHost: x\r\nConnection: close\r\n\r\n"

    add("rl-missing-version", raw_line("GET /livez"), 400, "no HTTP version")
    add("rl-only-method", raw_line("GET"), 400, "only a method")
    add("rl-empty-target", raw_line("GET  HTTP/1.1"), 400, "no target (two spaces)")
    add("rl-double-space-1", raw_line("GET  /livez HTTP/1.1"), 400, "two spaces after the method")
    add("rl-double-space-2", raw_line("GET /livez  HTTP/1.1"), 400, "two spaces before the version")
    add("rl-leading-space", raw_line(" GET /livez HTTP/1.1"), 400, "a space before the method")
    add("rl-trailing-space", raw_line("GET /livez HTTP/1.1 "), 400, "a space after the version")
    add("rl-four-parts", raw_line("GET /livez HTTP/1.1 extra"), 400, "a fourth part")
    add("rl-space-in-target", raw_line("GET /li vez HTTP/1.1"), 400, "a space inside the target")
    add("rl-lowercase-version", raw_line("GET /livez http/1.1"), 400, "a lower-case protocol name")
    add("rl-https-version", raw_line("GET /livez HTTPS/1.1"), 400, "HTTPS is not a protocol name")
    add("rl-version-no-minor", raw_line("GET /livez HTTP/1"), 400, "a version without minor")
    add("rl-version-http2-short", raw_line("GET /livez HTTP/2"), 400, "HTTP/2 is not DIGIT.DIGIT: malformed, not 505")
    add("rl-version-three-parts", raw_line("GET /livez HTTP/1.1.1"), 400, "a three-part version")
    add("rl-version-two-digit-minor", raw_line("GET /livez HTTP/1.10"), 400, "a two-digit minor version")
    add("rl-version-two-digit-major", raw_line("GET /livez HTTP/11.1"), 400, "a two-digit major version")
    add("rl-version-letters", raw_line("GET /livez HTTP/a.b"), 400, "letters as version digits")
    add("rl-version-empty", raw_line("GET /livez HTTP/"), 400, "an empty version")
    add("rl-version-negative", raw_line("GET /livez HTTP/-1.1"), 400, "a negative version")
    add("rl-version-missing-slash", raw_line("GET /livez HTTP1.1"), 400, "no slash in the version")
    add("rl-empty-line-only", b"\r\n\r\n\r\n\r\n" + b"\x00", 400, "empty lines then a NUL")
    add("rl-method-only-spaces", raw_line("   "), 400, "a request line of spaces")
    add("rl-target-first", raw_line("/livez GET HTTP/1.1"), 400, "parts in the wrong order")
    add("rl-ssh-banner", b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", 400, "an SSH client on the HTTP port")
    add("rl-smtp", b"EHLO example.com\r\n", 400, "an SMTP client on the HTTP port")
    add("rl-redis", b"*1\r\n$4\r\nPING\r\n", 400, "a Redis client on the HTTP port")
    add("rl-json", b'{"jsonrpc":"2.0","method":"x"}\r\n\r\n', 400, "a JSON document instead of a request line")
    add("tls-client-hello", tls_client_hello(), 400, "a TLS ClientHello (https:// to the plain port)")
    add("tls-client-hello-short", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400, "the first bytes of a TLS ClientHello")
    add("tls-sslv2-hello", b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", 400, "an SSLv2-style ClientHello")
    for i, size in enumerate([16, 64, 512, 4096, 16000]):
        blob = bytes([rnd.randrange(0x80, 0x100)]) + bytes(rnd.getrandbits(8) for _ in range(size - 1))
        add("random-binary-%d" % size, blob + b"\r\n\r\n", 400, "random binary (%d bytes, seeded)" % size)
    add("random-binary-ascii-noise", bytes(rnd.randrange(0x21, 0x7F) for _ in range(2000)) + b" x y z\r\n\r\n", 400,
        "printable noise with too many parts in the request line")

    # ------------------------------------------------------------------
    # HTTP versions.
    for v in ["HTTP/2.0", "HTTP/3.0", "HTTP/1.2", "HTTP/0.9", "HTTP/1.9", "HTTP/9.9", "HTTP/0.0"]:
        add("version-" + v[5:].replace(".", "-"), head("GET /livez", version=b(v)), 505, "well-formed but unsupported version " + v)
    add("h2-preface", H2_PREFACE, 505, "the HTTP/2 connection preface (prior knowledge)")
    add("h2-preface-settings", H2_PREFACE + H2_SETTINGS, 505, "the HTTP/2 preface followed by a SETTINGS frame")
    add("h2-preface-partial", b"PRI * HTTP/2.0\r\n\r\n", 505, "the first part of the HTTP/2 preface")
    add("version-2-0-post-body", req("POST /livez", body=b"{}", version=b"HTTP/2.0"), 505, "an HTTP/2.0 request line with a body")
    add("version-2-0-no-host", head("GET /livez", host=False, version=b"HTTP/2.0"), 505, "505 takes precedence over the missing Host")

    # ------------------------------------------------------------------
    # Request targets.
    add("target-no-slash", get("livez"), 400, "a target that does not start with /")
    add("target-query-only", get("?x=1"), 400, "a target that is only a query")
    add("target-fragment-only", get("#x"), 400, "a target that is only a fragment")
    add("target-authority-form", get("x:80"), 400, "authority-form on GET")
    add("target-connect", req("CONNECT example.com:443"), 400, "CONNECT in authority-form (no proxy here)")
    add("target-backslash", get("\\livez"), 400, "a backslash instead of a slash")
    add("target-dot", get("."), 400, "a single dot as target")
    add("absolute-form-livez", get("http://x/livez"), 200, "absolute-form is accepted and routed as /livez")
    add("absolute-form-pizza", get("http://example.com/api/v1/public/pizzas/1"), 200, "absolute-form with another host")
    add("absolute-form-query", get("http://x/api/v1/public/pizzas?limit=1"), 200, "absolute-form with a query")
    add("absolute-form-port", get("http://x:8080/livez"), 200, "absolute-form with a port")
    add("absolute-form-unknown", get("http://x/nope"), 404, "absolute-form routed to an unknown path")
    add("absolute-form-head", req("HEAD http://x/livez"), 200, "absolute-form HEAD")
    add("absolute-form-utf8", b"GET http://x/\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "absolute-form with raw UTF-8")
    add("asterisk-options", req("OPTIONS *"), 404, "OPTIONS * goes to the router, which knows no *")
    add("asterisk-get", get("*"), 404, "GET * goes to the router, which answers 404")
    add("target-431-20k", get("/livez?x=" + "a" * 20 * 1024), 431, "a 20 KiB URL")
    add("target-431-60k", get("/" + "a" * 60 * 1024), 431, "a 60 KiB path")

    # ------------------------------------------------------------------
    # Host.
    add("host-missing", req("GET /livez", host=False), 400, "HTTP/1.1 without Host")
    add("host-missing-post", req("POST /api/v1/oauth/token", ["Content-Type: application/x-www-form-urlencoded"], body=b"grant_type=x", host=False),
        400, "HTTP/1.1 POST without Host")
    add("host-twice", req("GET /livez", ["Host: a", "Host: b"], host=False), 400, "two Host headers")
    add("host-twice-same", req("GET /livez", ["Host: x", "Host: x"], host=False), 400, "two Host headers even with the same value")
    add("host-twice-case", req("GET /livez", ["Host: a", "HOST: a"], host=False), 400, "two Host headers in different case")
    add("host-missing-absolute-form", req("GET http://x/livez", host=False), 400, "HTTP/1.1 absolute-form still needs Host")
    add("host-http10-missing", head("GET /livez", host=False, close=False, version=b"HTTP/1.0"), 200, "HTTP/1.0 needs no Host")

    # ------------------------------------------------------------------
    # Content-Length.
    def cl(value, body=b"hello", target="POST /livez"):
        return head(target, [b"Content-Length: " + b(value)]) + body

    add("cl-conflict", head("POST /livez", ["Content-Length: 5", "Content-Length: 6"]) + b"hello!", 400, "two different Content-Length headers")
    add("cl-conflict-zero", head("POST /livez", ["Content-Length: 0", "Content-Length: 5"]) + b"hello", 400, "Content-Length 0 and 5")
    add("cl-list", cl("1, 2"), 400, "Content-Length: 1, 2")
    add("cl-list-no-space", cl("5,6"), 400, "Content-Length: 5,6")
    for name, value in [("plus", "+5"), ("plus-27", "+27"), ("minus", "-1"), ("decimal", "1.5"), ("hex", "0x10"), ("empty", ""),
                        ("space-inside", "5 5"), ("letters", "abc"), ("suffix", "5a"), ("exponent", "1e3"), ("underscore", "1_0"),
                        ("negative-zero", "-0"), ("quoted", '"5"'), ("semicolon", "5;"), ("tab-inside", "5\t5")]:
        add("cl-" + name, cl(value), 400, "Content-Length %r is not all digits" % value)
    add("cl-and-te", head("POST /livez", ["Content-Length: 5", "Transfer-Encoding: chunked"]) + b"0\r\n\r\n", 400,
        "Content-Length together with Transfer-Encoding (CL.TE)")
    add("te-and-cl", head("POST /livez", ["Transfer-Encoding: chunked", "Content-Length: 5"]) + b"0\r\n\r\n", 400,
        "Transfer-Encoding together with Content-Length (TE.CL)")
    add("cl-and-te-smuggle", head("POST /livez", ["Content-Length: 44", "Transfer-Encoding: chunked"], close=False)
        + b"0\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nX: GET /livez ", 400, "a classic CL.TE smuggling attempt")
    add("cl-and-te-identity", head("POST /livez", ["Content-Length: 5", "Transfer-Encoding: identity"]) + b"hello", 400,
        "Content-Length with Transfer-Encoding: identity")
    add("cl-stall-short-body", head("POST /livez", ["Content-Length: 10"], close=False) + b"hello", 408, "Content-Length above what is sent: the body never completes")
    add("cl-stall-1mib-not-sent", head("POST /livez", ["Content-Length: 1048576"], close=False) + b"x" * 1000, 408,
        "exactly 1 MiB declared (allowed), body never completes")
    add("cl-long-body-stall-leftover", head("POST /livez", ["Content-Length: 2"], close=False) + b"{}XYZ", "405,408",
        "bytes after the declared body start a next request that never completes")
    add("cl-long-body-next-request", head("POST /livez", ["Content-Length: 2"], close=False) + b"{}" + get("/nope"), "405,404",
        "bytes after the declared body are the next request")
    for name, value in [("1048577", "1048577"), ("99999999999", "99999999999"), ("u64-max", "18446744073709551615"),
                        ("u64-max-plus-1", "18446744073709551616"), ("23-digits", "99999999999999999999999"), ("100-digits", "9" * 100),
                        ("2gib", "2147483648"), ("4gib", "4294967296")]:
        add("cl-413-" + name, head("POST /livez", ["Content-Length: " + value], close=False) + b"x" * 100, 413,
            "declared Content-Length %s above 1 MiB: answered at once, without waiting for the body" % value[:30])
    add("cl-413-unknown-path", head("POST /nope", ["Content-Length: 1048577"], close=False), 413, "413 on an unknown path")
    add("cl-413-get", head("GET /livez", ["Content-Length: 99999999999"], close=False), 413, "413 on a GET")
    add("cl-413-token", head("POST /api/v1/oauth/token", ["Content-Type: application/json", "Content-Length: 5000000"], close=False) + b'{"a":',
        413, "413 on the token endpoint")
    add("cl-413-pizzas", head("POST /api/v1/pizzas", ["Content-Type: application/json", "Content-Length: 2097152"], close=False) + b"[" * 1000,
        413, "413 on pizzas before authentication")
    add("cl-413-http10", head("POST /livez", ["Content-Length: 1048577"], host=False, close=False, version=b"HTTP/1.0"), 413, "413 in HTTP/1.0")
    add("cl-413-then-request", head("POST /livez", ["Content-Length: 1048577"], close=False) + get("/livez"), 413,
        "after a 413 the connection closes: the next request is not answered")
    add("cl-1mib-exact-leading-zeros", head("POST /livez", ["Content-Length: 0001048577"], close=False), 413, "1048577 with leading zeros")

    # ------------------------------------------------------------------
    # Transfer-Encoding.
    def te(value, body=b"5\r\nhello\r\n0\r\n\r\n", version=b"HTTP/1.1", host=True):
        return head("POST /livez", [b"Transfer-Encoding: " + b(value)], host=host, version=version) + body

    add("te-http10", te("chunked", version=b"HTTP/1.0", host=False), 400, "Transfer-Encoding in an HTTP/1.0 request")
    add("te-http10-with-host", te("chunked", version=b"HTTP/1.0"), 400, "Transfer-Encoding in HTTP/1.0 with a Host")
    for name, value in [("identity", "identity"), ("gzip", "gzip"), ("deflate", "deflate"), ("compress", "compress"), ("br", "br"),
                        ("chunked-gzip", "chunked, gzip"), ("chunked-identity", "chunked, identity"), ("chunked-chunked", "chunked, chunked"),
                        ("chunked-chunked-nospace", "chunked,chunked"), ("xchunked", "xchunked"), ("chunked-suffix", "chunkedx"),
                        ("empty", ""), ("comma", ","), ("chunked-comma", "chunked,"), ("quoted", '"chunked"'), ("chunked-param", "chunked;q=1"),
                        ("unknown", "foo")]:
        add("te-" + name, te(value), 400, "Transfer-Encoding %r: the last coding is not chunked" % value)
    add("te-two-headers-chunked", head("POST /livez", ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]) + b"0\r\n\r\n", 400,
        "two Transfer-Encoding headers combine to chunked, chunked")
    add("te-two-headers-last-x", head("POST /livez", ["Transfer-Encoding: chunked", "Transfer-Encoding: x"]) + b"0\r\n\r\n", 400,
        "two Transfer-Encoding headers combine to chunked, x (TE.TE obfuscation)")
    add("te-vt-chunked", te(b"\x0bchunked"), 400, "a vertical tab before chunked")
    add("te-ff-chunked", te(b"chunked\x0c"), 400, "a form feed after chunked")
    for name, value in [("gzip-chunked", "gzip, chunked"), ("deflate-chunked", "deflate, chunked"), ("foo-chunked", "foo, chunked"),
                        ("br-chunked", "br, chunked"), ("gzip-gzip-chunked", "gzip, gzip, chunked")]:
        add("te-501-" + name, te(value), 501, "Transfer-Encoding %r: an unsupported coding before chunked" % value)
    add("te-501-two-headers", head("POST /livez", ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"]) + b"0\r\n\r\n", 501,
        "two Transfer-Encoding headers combine to gzip, chunked")
    add("te-chunked-uppercase", te("CHUNKED"), 405, "coding names are case-insensitive")
    add("te-chunked-mixed-case", te("Chunked"), 405, "coding names are case-insensitive")
    add("te-chunked-tab-ows", te("\tchunked\t"), 405, "TAB is optional whitespace around a value")
    add("te-chunked-on-unknown-path", head("POST /nope", ["Transfer-Encoding: chunked"]) + b"5\r\nhello\r\n0\r\n\r\n", 404, "a chunked body to an unknown path")

    # ------------------------------------------------------------------
    # Chunked bodies (sent to a route that answers 405 once the body is read).
    def ch(body, close=True, target="POST /livez"):
        return chunked(target, body, close=close)

    add("chunked-valid", ch(b"5\r\nhello\r\n0\r\n\r\n"), 405, "a valid chunked body")
    add("chunked-empty", ch(b"0\r\n\r\n"), 405, "an empty chunked body")
    add("chunked-uppercase-hex", ch(b"A\r\n0123456789\r\n0\r\n\r\n"), 405, "upper-case hex size")
    add("chunked-lowercase-hex", ch(b"a\r\n0123456789\r\n0\r\n\r\n"), 405, "lower-case hex size")
    add("chunked-leading-zeros", ch(b"0005\r\nhello\r\n000\r\n\r\n"), 405, "leading zeros in sizes")
    add("chunked-many-small", ch(b"".join(b"1\r\nx\r\n" for _ in range(2000)) + b"0\r\n\r\n"), 405, "2,000 one-byte chunks")
    add("chunked-extension", ch(b"5;name=value\r\nhello\r\n0\r\n\r\n"), 405, "a chunk extension is ignored (RFC 9112 7.1.1)")
    add("chunked-trailer", ch(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"), 405, "a trailer field after the last chunk")
    add("chunked-60k", ch(b"EA60\r\n" + b"y" * 60000 + b"\r\n0\r\n\r\n"), 405, "one 60,000-byte chunk")
    add("chunked-binary-data", ch(b"100\r\n" + bytes(range(256)) + b"\r\n0\r\n\r\n"), 405, "binary chunk data including CR LF and NUL")
    for name, size in [("g", b"g"), ("z", b"zz"), ("0x", b"0x5"), ("minus", b"-5"), ("plus", b"+5"), ("empty", b""), ("space", b" 5"),
                       ("decimal", b"5.0"), ("nul", b"5\x00"), ("utf8", "\uff15".encode())]:
        add("chunked-bad-size-" + name, ch(size + b"\r\nhello\r\n0\r\n\r\n"), 400, "chunk size %r is not hex" % size)
    add("chunked-size-lf", ch(b"5\nhello\r\n0\r\n\r\n"), 400, "chunk size line ended by a bare LF")
    add("chunked-size-cr", ch(b"5\rhello\r\n0\r\n\r\n"), 400, "chunk size line ended by a bare CR")
    add("chunked-size-no-newline", ch(b"5hello\r\n0\r\n\r\n"), 400, "chunk size line without CRLF")
    add("chunked-data-too-long", ch(b"3\r\nhello\r\n0\r\n\r\n"), 400, "chunk data longer than its size")
    add("chunked-data-missing-crlf", ch(b"5\r\nhello0\r\n\r\n"), 400, "no CRLF after the chunk data")
    add("chunked-data-lf-only", ch(b"5\r\nhello\n0\r\n\r\n"), 400, "a bare LF after the chunk data")
    add("chunked-last-lf-only", ch(b"5\r\nhello\r\n0\n\n"), 400, "the last chunk ends with bare LFs")
    add("chunked-bad-trailer", ch(b"0\r\nno colon\r\n\r\n"), 400, "a trailer line without a colon")
    add("chunked-trailer-nul", ch(b"0\r\nX-T: a\x00b\r\n\r\n"), 400, "a NUL in a trailer")
    add("chunked-stall-short-data", ch(b"5\r\nhel", close=False), 408, "chunk data shorter than its size, then silence")
    add("chunked-stall-no-last-chunk", ch(b"5\r\nhello\r\n", close=False), 408, "no last chunk")
    add("chunked-stall-no-final-crlf", ch(b"5\r\nhello\r\n0\r\n", close=False), 408, "the last chunk without its final CRLF")
    add("chunked-stall-size-only", ch(b"5", close=False), 408, "a size line that never ends")
    add("chunked-stall-nothing", ch(b"", close=False), 408, "chunked announced, no body sent")
    add("chunked-413-size", ch(b"100001\r\n" + b"x" * 1000, close=False), 413, "one chunk of 1,048,577 bytes declared")
    add("chunked-413-sum", ch(b"1\r\nx\r\n100000\r\n" + b"x" * 100, close=False), 413,
        "1 byte plus a declared 1 MiB chunk: more than 1 MiB in total")
    add("chunked-413-u64", ch(b"FFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"), 413, "chunk size 2^64-1")
    add("chunked-413-overflow", ch(b"FFFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"), 413, "a chunk size beyond 64 bits (like a huge Content-Length)")
    add("chunked-then-request", ch(b"5\r\nhello\r\n0\r\n\r\n", close=False) + get("/nope"), "405,404", "the request after a chunked body is answered next")
    add("chunked-smuggle-after-bad", ch(b"3\r\nhello\r\n0\r\n\r\n", close=False) + get("/nope"), 400,
        "after a malformed chunked body nothing more is read")
    add("chunked-then-pipelined-chunked", ch(b"1\r\na\r\n0\r\n\r\n", close=False) + ch(b"2\r\nbb\r\n0\r\n\r\n"), "405,405",
        "two chunked requests back to back")
    add("chunked-get", chunked("GET /livez", b"5\r\nhello\r\n0\r\n\r\n"), 200, "a GET with a chunked body")

    # ------------------------------------------------------------------
    # Head size and header count limits.
    add("header-64k-line", get("/livez", ["X-Big: " + "a" * 64 * 1024]), 431, "a 64 KiB header line")
    add("header-17k-line", get("/livez", ["X-Big: " + "a" * 17 * 1024]), 431, "a 17 KiB header line")
    add("header-64k-no-end", head("GET /livez", ["X-Big: " + "a" * 64 * 1024], close=False)[:-4], 431,
        "a 64 KiB header line that never ends: 431 without waiting")
    add("header-1000-fields", get("/livez", ["X-%d: 1" % i for i in range(1000)]), 431, "1,000 short header fields")
    add("header-101-fields", get("/livez", ["X-F%d: 1" % i for i in range(99)]), 431, "101 header fields (99 + Host + Connection)")
    add("header-200-empty-fields", get("/livez", ["X-%d:" % i for i in range(200)]), 431, "200 empty header fields")
    add("header-many-big", get("/livez", ["X-H%d: %s" % (i, "c" * 500) for i in range(40)]), 431, "40 fields of 500 bytes: 20 KiB of head")
    add("header-1000-same-name", get("/livez", ["Cookie: a=1"] * 1000), 431, "1,000 repeated Cookie fields")
    add("header-431-cookie", get("/livez", ["Cookie: " + "; ".join("c%d=%s" % (i, "v" * 40) for i in range(500))]), 431, "a 23 KiB Cookie")
    add("header-431-auth", req("GET /api/v1/clients", ["Authorization: Bearer " + "A" * 30000]), 431, "a 30 KiB bearer token")
    add("header-431-method", raw_line("A" * 20000 + " /livez HTTP/1.1"), 431, "a 20 KiB method")
    add("header-431-version-line", raw_line("GET /livez HTTP/" + "1" * 20000), 431, "a 20 KiB version string")
    add("header-431-lf-spam", b"GET /livez HTTP/1.1\r\n" + b"X: y\r\n" * 3000, 431, "3,000 header lines without an end")

    # ------------------------------------------------------------------
    # Expect.
    add("expect-100-continue", req("POST /livez", ["Expect: 100-continue"], body=b"{}"), 405,
        "100 Continue, then the final answer (the runner skips 1xx)")
    add("expect-100-continue-case", req("POST /livez", ["Expect: 100-Continue"], body=b"{}"), 405,
        "the Expect value is case-insensitive (RFC 9110 10.1.1)")
    add("expect-100-continue-get", get("/livez", ["Expect: 100-continue"]), 200, "100-continue on a request without a body")
    add("expect-100-continue-token", req("POST /api/v1/oauth/token", ["Expect: 100-continue", "Content-Type: application/x-www-form-urlencoded"],
                                         body=b"grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123"), 200,
        "a token issued after 100 Continue")
    add("expect-100-continue-chunked", chunked("POST /livez", b"5\r\nhello\r\n0\r\n\r\n", ["Expect: 100-continue"]), 405, "100-continue with a chunked body")
    add("expect-100-continue-413", head("POST /livez", ["Expect: 100-continue", "Content-Length: 1048577"], close=False), 413,
        "a body too large is refused at once instead of 100 Continue")
    add("expect-100-continue-stall-body", head("POST /livez", ["Expect: 100-continue", "Content-Length: 2"], close=False), 408,
        "100 Continue, then the body never arrives")
    for name, value in [("200-ok", "200-ok"), ("foo", "foo"), ("102-processing", "102-processing"), ("list", "100-continue, foo"),
                        ("101", "101-continue"), ("params", "100-continue; x=1")]:
        add("expect-417-" + name, req("POST /livez", ["Expect: " + value], body=b"{}"), 417, "Expect %r is not 100-continue" % value)
    add("expect-417-get", get("/livez", ["Expect: foo"]), 417, "an unknown expectation on a GET")

    # ------------------------------------------------------------------
    # Timeouts and silence.
    add("silent", b"", "closed", "a connection that sends nothing is closed after the read timeout, without an answer")
    add("stall-one-byte", b"G", 408, "one byte, then silence")
    add("stall-method", b"GET", 408, "a method, then silence")
    add("stall-request-line", b"GET /livez HTTP/1.1", 408, "a request line without its CRLF")
    add("stall-after-request-line", b"GET /livez HTTP/1.1\r\n", 408, "a request line, then silence")
    add("stall-header", b"GET /livez HTTP/1.1\r\nHost: x", 408, "half a header")
    add("stall-head-no-empty-line", b"GET /livez HTTP/1.1\r\nHost: x\r\n", 408, "a head without its empty line")
    add("stall-head-cr", b"GET /livez HTTP/1.1\r\nHost: x\r\n\r", 408, "a head ending in CR")
    add("stall-post-body", head("POST /livez", ["Content-Length: 100"], close=False) + b"x" * 50, 408, "half a body")
    add("stall-post-no-body", head("POST /api/v1/oauth/token", ["Content-Length: 10", "Content-Type: application/json"], close=False), 408,
        "a head announcing a body that never comes")
    add("stall-after-keepalive", get("/livez", close=False) + b"GET /livez HTTP/1.1\r\nHo", "200,408",
        "the second request on a connection never completes")
    add("keepalive-idle", get("/livez", close=False), 200, "an idle keep-alive connection is closed without a 408")
    add("keepalive-idle-http10", head("GET /livez", ["Connection: keep-alive"], host=False, close=False, version=b"HTTP/1.0"), 200,
        "HTTP/1.0 keep-alive: answered, then closed when idle")

    # ------------------------------------------------------------------
    # Pipelining and connection handling.
    add("pipeline-two", get("/livez", close=False) + get("/nope"), "200,404", "two pipelined requests answered in order")
    add("pipeline-three", get("/livez", close=False) + get("/nope", close=False) + get("/api/v1/public/pizzas/1"), "200,404,200",
        "three pipelined requests")
    add("pipeline-ten", get("/livez", close=False) * 9 + get("/livez"), ",".join(["200"] * 10), "ten pipelined requests")
    add("pipeline-fifty-mixed", (get("/livez", close=False) + get("/nope", close=False)) * 25 + get("/health"),
        ",".join(["200,404"] * 25 + ["200"]), "51 pipelined requests, alternating")
    add("pipeline-head-middle", get("/livez", close=False) + req("HEAD /openapi.json", close=False) + get("/nope"), "200,200,404",
        "a HEAD answer in the middle carries no body")
    add("pipeline-post-get", req("POST /livez", body=b"abc", close=False) + get("/livez"), "405,200", "a body, then a request")
    add("pipeline-then-bad", get("/livez", close=False) + b"GET /x\nHost: x\n\n" + get("/livez"), "200,400",
        "a malformed request ends the connection: nothing after it is answered")
    add("pipeline-close-first", get("/livez") + get("/nope"), 200, "Connection: close: the second request is not answered")
    add("pipeline-then-431", get("/livez", close=False) + get("/livez", ["X-%d: 1" % i for i in range(200)]), "200,431",
        "the second request has too many fields")
    add("pipeline-then-505", get("/livez", close=False) + head("GET /livez", version=b"HTTP/2.0"), "200,505", "the second request is HTTP/2.0")
    add("pipeline-then-413", get("/livez", close=False) + head("POST /livez", ["Content-Length: 99999999999"], close=False), "200,413",
        "the second request declares a huge body")
    add("pipeline-then-417", get("/livez", close=False) + req("POST /livez", ["Expect: foo"], body=b"{}"), "200,417",
        "the second request has an unknown expectation")
    add("pipeline-then-501", get("/livez", close=False) + te("gzip, chunked"), "200,501", "the second request has gzip, chunked")
    add("pipeline-405s", req("DELETE /health", close=False) + req("PUT /livez", body=b"x", close=False) + req("PATCH /metrics", body=b""),
        "405,405,405", "wrong methods, pipelined")
    add("pipeline-auth-401", get("/api/v1/clients", close=False) + get("/livez"), "401,200", "a 401 keeps the connection open")
    add("pipeline-app-400", get("/api/v1/public/pizzas/abc", close=False) + get("/livez"), "400,200",
        "an application 400 keeps the connection open")
    add("http10-plain", head("GET /livez", host=False, close=False, version=b"HTTP/1.0"), 200, "HTTP/1.0")
    add("http10-then-request", head("GET /livez", host=False, close=False, version=b"HTTP/1.0") + get("/nope"), 200,
        "HTTP/1.0 without keep-alive: answered, then closed")
    add("http10-keepalive-pipeline", head("GET /livez", ["Connection: keep-alive"], host=False, close=False, version=b"HTTP/1.0")
        + head("GET /nope", host=False, close=False, version=b"HTTP/1.0"), "200,404", "HTTP/1.0 with keep-alive keeps the connection")
    add("http10-head", head("HEAD /api/v1/public/pizzas/1", host=False, close=False, version=b"HTTP/1.0"), 200, "HTTP/1.0 HEAD")
    add("http10-post", req("POST /livez", body=b"hello", host=False, close=False, version=b"HTTP/1.0"), 405, "HTTP/1.0 POST with a body")
    add("http10-absolute-form", head("GET http://x/livez", host=False, close=False, version=b"HTTP/1.0"), 200, "HTTP/1.0 absolute-form")
    add("http10-pizza", head("GET /api/v1/public/pizzas/1", host=False, close=False, version=b"HTTP/1.0"), 200, "HTTP/1.0 pizza 1")
    add("http10-bad-header", head("GET /livez", ["X-A : b"], host=False, close=False, version=b"HTTP/1.0"), 400, "HTTP/1.0 with a bad header")

    # ------------------------------------------------------------------
    # Methods.
    for m in ["FOO", "get", "Get", "PROPFIND", "TRACE", "OPTIONS", "PATCH", "DELETE", "PUT", "POST", "M-SEARCH", "BREW", "X" * 64]:
        label = m[:12].lower() if m == m.upper() else ("lowercase-" if m == m.lower() else "mixedcase-") + m.lower()
        add("method-%s-livez" % label, req(m + " /livez", body=b"" if m in ("POST", "PUT", "PATCH") else None), 405,
            "method %s on a GET-only route" % m[:12])
    for m in ["FOO", "get", "TRACE", "OPTIONS"]:
        add("method-%s-unknown-path" % (m.lower() if m == m.upper() else "lowercase-" + m), req(m + " /nope"), 404, "method %s on an unknown path" % m)
    add("method-get-token", get("/api/v1/oauth/token"), 405, "GET on the token endpoint")
    add("method-put-public-pizza", req("PUT /api/v1/public/pizzas/1", body=b"{}"), 405, "PUT on the public pizza")
    add("method-delete-pizzas", req("DELETE /api/v1/pizzas"), 405, "DELETE on the collection")
    add("method-get-pizza-protected", get("/api/v1/pizzas/1"), 405, "GET on /api/v1/pizzas/1 (PUT, DELETE only)")
    add("method-post-clients-id", req("POST /api/v1/clients/x", body=b"{}"), 405, "POST on a client")
    add("method-long-8k", raw_line("Z" * 8000 + " /livez HTTP/1.1"), 405, "an 8,000-byte method within the head limit")

    # ------------------------------------------------------------------
    # Pizza IDs.
    for name, pid, expect in [("zero", "0", 400), ("negative", "-1", 400), ("huge", "99999999999999999999", 400),
                              ("i64-max", "9223372036854775807", 404), ("i64-max-plus-1", "9223372036854775808", 400),
                              ("i64-min", "-9223372036854775808", 400), ("missing", "999999", 404), ("leading-zero", "01", 200),
                              ("abc", "abc", 400), ("decimal", "1.5", 400), ("exponent", "1e3", 400), ("plus", "+1", 400),
                              ("hex", "0x1", 400), ("pct-nul", "%00", 400), ("pct-one", "%31", 400), ("pct-space", "1%20", 400),
                              ("pct-ff", "%ff", 400), ("pct-bad", "%ZZ", 400), ("semicolon", "1;x", 400), ("sql", "1%20OR%201=1", 400),
                              ("sql-quote", "1'", 400), ("1000-digits", "9" * 1000, 400), ("long-zeros", "0" * 500 + "1", 200),
                              ("unicode-digit-pct", "%EF%BC%91", 400), ("tilde", "~1", 400), ("star", "*", 400), ("dot", ".", 400),
                              ("dotdot", "..", 400)]:
        add("app-id-" + name, get("/api/v1/public/pizzas/" + pid), expect, "pizza ID %r" % pid[:40])
    add("app-id-head-negative", req("HEAD /api/v1/public/pizzas/-1"), 400, "HEAD with a negative ID")
    add("app-put-id-no-token", req("PUT /api/v1/pizzas/abc", ["Content-Type: application/json"], body=b"{}"), 401, "PUT without a token")
    add("app-delete-id-no-token", req("DELETE /api/v1/pizzas/-1"), 401, "DELETE without a token")
    add("app-delete-client-no-token", req("DELETE /api/v1/clients/%00"), 401, "DELETE a client without a token")

    # ------------------------------------------------------------------
    # Query strings on the public list.
    for name, query, expect in [("limit-negative", "limit=-1", 400), ("limit-zero", "limit=0", 400), ("limit-huge", "limit=99999999999999999999", 400),
                                ("limit-1001", "limit=1001", 400), ("limit-1000", "limit=1000", 200), ("limit-abc", "limit=abc", 400),
                                ("limit-empty", "limit=", 400), ("limit-no-value", "limit", 400), ("limit-decimal", "limit=1.5", 400),
                                ("limit-plus", "limit=%2B1", 200), ("limit-space", "limit=%201", 400), ("limit-exp", "limit=1e2", 400),
                                ("offset-abc", "offset=abc", 400), ("offset-negative", "offset=-1", 400), ("offset-i64-max", "offset=9223372036854775807", 400),
                                ("offset-huge", "offset=99999999999999999999", 400), ("name-nul", "name=%00", 400), ("name-bad-escape", "name=%ZZ", 200),
                                ("name-truncated-escape", "name=%", 200), ("name-invalid-utf8", "name=%ff", 200), ("name-empty", "name=", 200),
                                ("name-like", "name=%25_%25", 200), ("name-long", "name=" + "a" * 10000, 200), ("repeated-limit", "limit=1&limit=2", 200),
                                ("repeated-name", "name=a&name=b", 200), ("unknown-param", "foo=bar", 200), ("only-ampersands", "&&&&", 200),
                                ("only-equals", "=", 200), ("created-by-abc", "created_by=abc", 400), ("created-by-negative", "created_by=-1", 400),
                                ("sql-injection", "name=%27%20OR%201%3D1--", 200), ("plus-as-space", "name=+", 200),
                                ("pct-encoded-key", "%6cimit=-1", 400), ("many-params", "&".join("p%d=%d" % (i, i) for i in range(1000)), 200),
                                ("limit-nul", "limit=1%00", 400), ("offset-overflow-sum", "limit=1000&offset=9223372036854775807", 400)]:
        add("app-query-" + name, get("/api/v1/public/pizzas?" + query), expect, "query %r" % query[:40])

    # ------------------------------------------------------------------
    # Authentication.
    add("app-auth-none-clients", get("/api/v1/clients"), 401, "a protected route without a token")
    add("app-auth-none-pizzas", req("POST /api/v1/pizzas", ["Content-Type: application/json"], body=b'{"name":"x","price":1}'), 401,
        "creating a pizza without a token")
    add("app-auth-empty-bearer", get("/api/v1/clients", ["Authorization: Bearer"]), 401, "Bearer without a token")
    add("app-auth-bearer-space", get("/api/v1/clients", ["Authorization: Bearer "]), 401, "Bearer and a space")
    add("app-auth-garbage", get("/api/v1/clients", ["Authorization: Bearer x.y.z"]), 401, "a garbage token")
    add("app-auth-basic-on-bearer", get("/api/v1/clients", ["Authorization: Basic ZGV2LWNsaWVudDpkZXYtc2VjcmV0LTEyMw=="]), 401,
        "Basic credentials on a bearer route")
    add("app-auth-alg-none", get("/api/v1/clients", ["Authorization: Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                                                     "eyJzdWIiOiIxIiwiZXhwIjo0MTAyNDQ0ODAwfQ."]), 401, "an alg=none token")
    add("app-auth-long-token", get("/api/v1/clients", ["Authorization: Bearer " + "A" * 10000]), 401, "a 10 KiB token")
    add("app-auth-two-headers", get("/api/v1/clients", ["Authorization: Bearer a", "Authorization: Bearer b"]), 401, "two Authorization headers")
    add("app-auth-lowercase-scheme", get("/api/v1/clients", ["Authorization: bearer x"]), 401, "lower-case scheme, invalid token")

    # ------------------------------------------------------------------
    # Hostile bodies for the token endpoint (no credentials).
    deep = "[" * 10000
    token_json = [
        ("deep-array", deep), ("deep-object", '{"a":' * 10000), ("deep-closed", "[" * 5000 + "]" * 5000),
        ("big-number", '{"grant_type":1e400}'), ("number-only", "1e400"), ("neg-number", "-1e400"),
        ("invalid-utf8", b'{"grant_type":"\xff\xfe"}'), ("nul-escape", '{"grant_type":"client_credentials","client_id":"a\\u0000b","client_secret":"x"}'),
        ("raw-nul", b'{"grant_type":"\x00"}'), ("lone-surrogate", '{"grant_type":"\\ud800"}'), ("huge-string", '{"client_id":"' + "a" * 60000 + '"}'),
        ("wrong-types", '{"grant_type":["client_credentials"],"client_id":{},"client_secret":1}'), ("array", "[]"), ("null", "null"),
        ("string", '"client_credentials"'), ("empty-object", "{}"), ("truncated", '{"grant_type":'), ("trailing-garbage", '{"grant_type":"x"}xyz'),
        ("duplicate-keys", '{"grant_type":"client_credentials","grant_type":"password"}'), ("bom", b'\xef\xbb\xbf{}'), ("empty", ""),
        ("whitespace", "   \n  "), ("many-keys", "{" + ",".join('"k%d":%d' % (i, i) for i in range(5000)) + "}"),
    ]
    for name, body in token_json:
        expect = 400  # every case is malformed; a NUL in any parameter too, as on every route
        add("app-token-json-" + name, json_post("/api/v1/oauth/token", body), expect, "token endpoint, JSON body: " + name)
    token_form = [
        ("bad-escape", "grant_type=%ZZ"), ("nul", "grant_type=client_credentials&client_id=%00&client_secret=x"),
        ("repeated", "grant_type=client_credentials&grant_type=client_credentials"), ("invalid-utf8", "grant_type=%ff"),
        ("wrong-grant", "grant_type=password&username=a&password=b"), ("empty", ""), ("huge-value", "client_id=" + "a" * 60000),
        ("many-params", "&".join("p%d=1" % i for i in range(5000))), ("only-ampersands", "&" * 1000), ("json-as-form", '{"a":1}'),
        ("raw-binary", bytes(rnd.getrandbits(8) for _ in range(1000))),
    ]
    for name, body in token_form:
        expect = 400  # every case is malformed; a NUL in any parameter too, as on every route
        add("app-token-form-" + name, form_token(body), expect, "token endpoint, form body: " + name)
    add("app-token-wrong-secret", form_token("grant_type=client_credentials&client_id=dev-client&client_secret=nope"), 401, "a wrong secret")
    add("app-token-text-plain", json_post("/api/v1/oauth/token", "grant_type=client_credentials", "text/plain"), 400, "an unsupported content type")
    add("app-token-no-content-type", req("POST /api/v1/oauth/token", body=b"grant_type=client_credentials"), 400, "no content type")

    # ------------------------------------------------------------------
    # Hostile bodies for pizzas: without a token (401 before the body
    # matters) and with the admin token the runner inserts.
    pizza_bodies = [
        ("deep-array", deep), ("deep-object", '{"a":' * 10000), ("price-1e400", '{"name":"x","price":1e400}'),
        ("price-neg-1e400", '{"name":"x","price":-1e400}'), ("price-string", '{"name":"x","price":"1"}'),
        ("price-nan", '{"name":"x","price":NaN}'), ("price-infinity", '{"name":"x","price":Infinity}'), ("price-negative", '{"name":"x","price":-1}'),
        ("price-huge-int", '{"name":"x","price":' + "9" * 400 + "}"), ("price-array", '{"name":"x","price":[1]}'),
        ("name-nul", '{"name":"a\\u0000b","price":1}'), ("name-number", '{"name":1,"price":1}'), ("name-empty", '{"name":"","price":1}'),
        ("name-spaces", '{"name":"   ","price":1}'), ("name-huge", '{"name":"' + "n" * 60000 + '","price":1}'),
        ("description-huge", '{"name":"x","description":"' + "d" * 60000 + '","price":1}'), ("ingredients-string", '{"name":"x","ingredients":"a","price":1}'),
        ("ingredients-numbers", '{"name":"x","ingredients":[1,2],"price":1}'), ("ingredients-many", '{"name":"x","ingredients":[' + ",".join(['"i"'] * 5000) + '],"price":1}'),
        ("ingredients-nul", '{"name":"x","ingredients":["a\\u0000"],"price":1}'), ("ingredient-empty", '{"name":"x","ingredients":[""],"price":1}'),
        ("invalid-utf8", b'{"name":"\xff\xfe","price":1}'), ("lone-surrogate", '{"name":"\\udc00","price":1}'), ("array", "[]"), ("null", "null"),
        ("number", "1e400"), ("empty", ""), ("truncated", '{"name":"x","price":'), ("trailing-garbage", '{"name":"x","price":1}}'),
        ("key-nul", '{"name\\u0000":"x","price":1}'), ("missing-name", '{"price":1}'), ("missing-price", '{"name":"x"}'),
        ("single-quotes", "{'name':'x','price':1}"), ("comments", '{"name":"x",/*c*/"price":1}'),
    ]
    for name, body in pizza_bodies[:12]:
        add("app-pizzas-anon-" + name, json_post("/api/v1/pizzas", body), 401, "no token: 401 whatever the body (%s)" % name)
    for name, body in pizza_bodies:
        add("app-pizzas-admin-" + name, authed_json("POST", "/api/v1/pizzas", body), 400, "admin token, hostile body: " + name)
    for name, body in pizza_bodies[:10]:
        add("app-put-admin-" + name, authed_json("PUT", "/api/v1/pizzas/1", body), 400, "admin token, PUT with hostile body: " + name)
    add("app-pizzas-admin-text-plain", authed_json("POST", "/api/v1/pizzas", '{"name":"x","price":1}', "text/plain"), 201,
        "a valid JSON body labelled text/plain is accepted: the service does not check Content-Type")
    add("app-put-admin-bad-id", authed_json("PUT", "/api/v1/pizzas/-1", '{"name":"x","price":1}'), 400, "admin token, PUT with a negative ID")
    add("app-put-admin-missing-id", authed_json("PUT", "/api/v1/pizzas/9223372036854775807", '{"name":"x","price":1}'), 404,
        "admin token, PUT to a pizza that does not exist")
    add("app-clients-admin-deep", authed_json("POST", "/api/v1/clients", deep), 400, "admin token, deeply nested client body")
    add("app-clients-admin-nul", authed_json("POST", "/api/v1/clients", '{"name":"a\\u0000"}'), 400, "admin token, NUL in a client name")
    add("app-clients-admin-wrong-type", authed_json("POST", "/api/v1/clients", '{"name":["x"]}'), 400, "admin token, client name of the wrong type")
    add("app-clients-admin-bad-grant", authed_json("POST", "/api/v1/clients", '{"name":"x","grant_types":"password"}'), 400,
        "admin token, a grant type other than client_credentials")

    # ------------------------------------------------------------------
    # Choices the listener made where the RFCs leave room (pinned so that a
    # change is deliberate). Add new cases below this line.
    add("leading-crlf-ignored", b"\r\n" + get("/livez"), 200, "an empty line before the request line is ignored (RFC 9112 2.2)")
    add("host-empty", req("GET /livez", ["Host:"], host=False), 200, "an empty Host is allowed (RFC 9112 3.2)")
    add("cl-twice-same", head("POST /livez", ["Content-Length: 5", "Content-Length: 5"]) + b"hello", 405,
        "two identical Content-Length values are one (RFC 9110 8.6)")
    add("cl-list-same", cl("5, 5"), 405, "a list of identical Content-Length values is one (RFC 9110 8.6)")
    add("te-501-identity-chunked", te("identity, chunked"), 501, "identity is no longer a transfer coding: unknown before chunked")
    add("expect-417-empty", get("/livez", ["Expect:"]), 417, "an empty Expect is not 100-continue")
    add("method-not-token", raw_line("GE(T /livez HTTP/1.1"), 400, "a method with a character that is not a token character")
    add("header-name-not-token", get("/livez", ["X(: y"]), 400, "a header name with a character that is not a token character")
    add("header-name-quote", get("/livez", ['X"A: y']), 400, "a header name with a quote")
    add("absolute-form-no-path", get("http://x"), 404, "absolute-form without a path is routed as /")
    add("absolute-form-bad-scheme", get("ftp://x/livez"), 400, "only http(s) absolute-form is accepted")
    add("chunked-extension-bws", ch(b"5 ; a=b\r\nhello\r\n0\r\n\r\n"), 405, "whitespace before a chunk extension (BWS)")

    return cases


def main():
    cases = build()
    names = [n for n, _, _, _ in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        sys.exit("duplicate case names: %s" % sorted(dupes))
    os.makedirs(CASES, exist_ok=True)
    wanted = set()
    total = 0
    rows = []
    for i, (name, data, expect, why) in enumerate(cases, start=1):
        file = "%03d-%s.http" % (i, name)
        if len(data) > MAX_FILE:
            sys.exit("%s is %d bytes (limit %d)" % (file, len(data), MAX_FILE))
        if "\t" in why or "\n" in why:
            sys.exit("%s: the why column may not hold TAB or newline" % file)
        total += len(data)
        wanted.add(file)
        path = os.path.join(CASES, file)
        old = open(path, "rb").read() if os.path.exists(path) else None
        if old != data:
            with open(path, "wb") as f:
                f.write(data)
        rows.append("%s\t%s\t%s" % (file, expect, why))
    for stale in sorted(set(os.listdir(CASES)) - wanted):
        if stale.endswith(".http"):
            os.remove(os.path.join(CASES, stale))
    if total > MAX_TOTAL:
        sys.exit("the corpus is %d bytes (limit %d)" % (total, MAX_TOTAL))
    with open(os.path.join(HERE, "expected.tsv"), "w", encoding="utf-8", newline="\n") as f:
        f.write("case\texpect\twhy\n")
        f.write("\n".join(rows) + "\n")
    print("%d cases, %d bytes" % (len(cases), total))


if __name__ == "__main__":
    main()

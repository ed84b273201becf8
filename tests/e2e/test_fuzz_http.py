"""Fuzzed raw HTTP against the real server: no request produces a 500 or kills it.

Requests are well-framed HTTP/1.1 (so the server can always answer) with hostile contents:
random methods and paths, query strings with random keys, percent-encoded random bytes
(invalid UTF-8 included), huge and empty values, repeated keys, odd headers and bodies, very
long targets and header values. Every answer must be one HTTP allows for the input. The long
variant (100k requests) is ``tools/fuzz_http.py``.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import ServerFactory
from tools.spawn import ShardstatsServer

ALLOWED = {200, 204, 304, 400, 401, 403, 404, 405, 413, 414, 431, 503}
LISTED = "https://www.example.com"  # browser_origins of the fuzzed server
EXAMPLES = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "600"))
pytestmark = pytest.mark.e2e

NOW = int(time.time() * 1000)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
                           "TRACE", "FOO"])
paths = st.sampled_from(["/analytics", "/analytics/", "/analytics/batch", "/analytics/range",
                         "/healthz", "/metrics", "/", "/docs", "/openapi.json", "/nope",
                         "//analytics", "/analytics/../analytics", "/%61nalytics",
                         "/tracker.js", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"])
raw_values = st.one_of(
    st.just(b""),
    st.sampled_from([str(NOW).encode(), b"click", b"impression", b"0", b"-1", b"1e3",
                     b"99999999999999999999999", b"alice", b"%", b"%zz", b"+", b"&"]),
    st.binary(max_size=40),
    st.integers(0, 2**70).map(lambda n: str(n).encode()),
    st.sampled_from([b"x" * 5000, b"\xff" * 300, "é".encode() * 200, b"9" * 30000]),
)
keys = st.sampled_from([b"timestamp", b"user", b"event", b"from", b"to", b"step",
                        b"x", b"", b"\xff", b"timestamp[]"]) | st.binary(max_size=8)
queries = st.lists(st.tuples(keys, raw_values), max_size=6).map(
    lambda pairs: "&".join(quote_from_bytes(k) + "=" + quote_from_bytes(v) for k, v in pairs)
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                        max_size=60) | st.sampled_from([
    "x" * 20000, "Bearer ", "Bearer x", LISTED, LISTED.upper(), LISTED + "/", "null",
    "http://127.0.0.1", "POST", "*", 'W/"x", *', "gzip;q=0, *", "*;q=x", "gzip;q=1e999"])
headers = st.lists(
    st.tuples(st.sampled_from(["X-Junk", "Authorization", "Accept", "Content-Type",
                               "X-" + "a" * 100, "Origin", "Access-Control-Request-Method",
                               "Access-Control-Request-Headers", "If-None-Match",
                               "Accept-Encoding"]), header_values),
    max_size=4,
)
bodies = st.binary(max_size=200) | st.sampled_from([b"", b"{}\n{\"timestamp\": 1}\n"])


def send_raw(server: ShardstatsServer, request: bytes) -> int | None:
    """Send one request on a fresh connection; return the status, or None if the server
    closed the connection without answering."""
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    line = data.split(b"\r\n", 1)[0]
    return int(line.split()[1])


def build(method: str, path: str, query: str, hdrs: list[tuple[str, str]], body: bytes) -> bytes:
    target = path + ("?" + query if query else "")
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head += [f"{name}: {value}" for name, value in hdrs]
    if body or method in {"POST", "PUT", "PATCH"}:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def test_fuzzed_requests_never_500(shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": LISTED})
    seen: dict[int | None, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(methods, paths, queries, headers, bodies)
    def one(method: str, path: str, query: str, hdrs: list[tuple[str, str]], body: bytes
            ) -> None:
        status = send_raw(server, build(method, path, query, hdrs, body))
        seen[status] = seen.get(status, 0) + 1
        assert server.running(), "server died"
        assert status in ALLOWED, (status, method, path, query[:200], hdrs, body[:50])

    one()
    assert server.running()
    valid = build("POST", "/analytics", f"timestamp={NOW}&user=after-fuzz&event=click", [], b"")
    assert send_raw(server, valid) == 204
    assert 400 in seen and (204 in seen or 200 in seen), seen


def test_invented_methods_do_not_grow_metrics(shardstats_server: ServerFactory,
                                              data_dir: Path) -> None:
    """hypercorn passes any token as a method; a label per method made /metrics unbounded."""
    server = shardstats_server.start(data_dir)

    def series() -> list[str]:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            text: str = response.read().decode()
        return [line.rpartition(" ")[0] for line in text.splitlines()
                if not line.startswith("#")]

    def invent(first: int, last: int) -> None:
        for i in range(first, last):
            method = f"M{i}" + "X" * 2000
            for path in (f"/nope/{i}", "/analytics", "/metrics"):
                assert send_raw(server, build(method, path, "", [], b"")) in {404, 405}

    invent(0, 1)
    series()
    before = series()
    invent(1, 200)
    assert series() == before

"""Events sent by web pages (``/tracker.js``): which cross-origin POSTs are taken, and the
CORS headers they get. ``BrowserOrigins.judge`` decides on header values alone;
``CrossOrigin.admit`` applies it in ``LeanFront``, before any route, so the rules hold on the
path that serves real traffic (every request enters through it).

Rules, for the ingest routes (``POST /analytics``, ``POST /analytics/batch``) only:
1. No ``Origin`` header, or the server's own origin (its authority equals ``Host``): an
   ordinary request. Tokens apply as configured; nothing changes.
2. ``Origin`` listed in ``browser_origins``: a browser ingest. It needs no ingest token (a
   page cannot keep a secret), and its answer carries ``Access-Control-Allow-Origin`` for
   that origin. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered
   ``204`` with what a browser needs to send the POST with any ``Content-Type``;
   ``navigator.sendBeacon`` with a string body sends ``text/plain``, which needs none.
3. Any other ``Origin`` (``null`` included): refused with ``403``, the reason in
   ``X-Shardstats-Error``; nothing is judged or stored.

Every other route ignores ``Origin`` and sends no CORS headers (queries stay token-guarded
and unreadable from other origins). The allowlist stops other sites' pages from sending
events through their visitors' browsers; it does not authenticate anyone: outside a browser
any ``Origin`` can be forged (README, "Tracker for web pages").
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger("shardstats.http")

INGEST_PATHS = frozenset({"/analytics", "/analytics/batch"})
CROSS_ORIGIN_METHODS = frozenset({"POST", "OPTIONS"})
# Set by the front on a listed origin's POST; the ingest routes then skip the token check.
# An ASGI scope comes from the server, never from the client, so it cannot be forged.
TRUSTED_ORIGIN = "shardstats.browser_origin"
REFUSED_REASON = "Origin not allowed (add it to browser_origins)"
PREFLIGHT_MAX_AGE = "86400"  # browsers cap it lower (Chromium: 2 hours)

Headers = list[tuple[str, str]]


class Verdict(enum.Enum):
    ORDINARY = "ordinary"
    ALLOWED = "allowed"
    REFUSED = "refused"


class BrowserOrigins:
    """The ``browser_origins`` allowlist, lowercased (``Settings.browser_origin_set``)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self._allowed = frozenset(origin.encode("latin-1") for origin in allowed)

    def judge(self, origin: bytes | None, host: bytes | None) -> Verdict:
        if origin is None:
            return Verdict.ORDINARY
        origin = origin.lower()
        if origin in self._allowed:
            return Verdict.ALLOWED
        _, sep, authority = origin.partition(b"://")
        if sep and host is not None and authority == host.lower():
            return Verdict.ORDINARY
        return Verdict.REFUSED


# Beacons always carry credentials (cookies of this server's site, which it never sets or
# reads): a beacon that needs a preflight (a Blob of another type than text/plain) is sent
# only when the preflight allows them, and a page's fetch with ``credentials: "include"``
# reads its answer only so. Harmless here: the origin is named, never ``*``, and nothing on
# the ingest routes depends on cookies.
_CREDENTIALS = ("access-control-allow-credentials", "true")


def allow_headers(origin: bytes) -> Headers:
    """Added to every answer to a listed origin's POST (success or error alike)."""
    return [
        ("access-control-allow-origin", origin.decode("latin-1")),
        _CREDENTIALS,
        ("access-control-expose-headers",
         "Retry-After, X-Shardstats-Error, X-Shardstats-Error-Field, X-Shardstats-Error-Reason"),
        ("vary", "Origin"),
    ]


def preflight_headers(origin: bytes) -> Headers:
    return [
        ("access-control-allow-origin", origin.decode("latin-1")),
        _CREDENTIALS,
        ("access-control-allow-methods", "POST"),
        ("access-control-allow-headers", "Content-Type"),
        ("access-control-max-age", PREFLIGHT_MAX_AGE),
        ("vary", "Origin"),
    ]


Send = Callable[[dict[str, Any]], Awaitable[None]]


class _RequestMetrics(Protocol):
    request_seconds: Any  # shardstats_request_seconds{route,method,status}


class CrossOrigin:
    """``browser_origins`` applied to one ASGI request of an ingest route."""

    def __init__(self, allowed: frozenset[str], metrics: _RequestMetrics) -> None:
        self._origins = BrowserOrigins(allowed)
        self._metrics = metrics

    async def admit(self, scope: Any, send: Send) -> tuple[Any, Send] | None:
        """What the route should see (the scope marked for a listed origin, a ``send`` that
        adds the CORS headers), or None when the answer was given here: ``403`` to another
        origin, ``204`` to a listed origin's preflight."""
        started = time.perf_counter()
        origin = host = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
            elif name == b"access-control-request-method":
                preflight = True
        method = scope["method"]
        verdict = self._origins.judge(origin, host)
        if verdict is Verdict.ORDINARY or (method == "OPTIONS" and not preflight):
            return scope, send
        assert origin is not None
        path = scope["path"]
        if verdict is Verdict.REFUSED:
            log.info("cross-origin %s %s refused: Origin %.200r is not in browser_origins",
                     method, path, origin)
            # POST /analytics answers never have a body; the batch route answers in JSON.
            body = b"" if path == "/analytics" else b'{"error":"%s"}' % REFUSED_REASON.encode()
            headers = [("x-shardstats-error", REFUSED_REASON), ("vary", "Origin")]
            if body:
                headers.append(("content-type", "application/json"))
            await _answer(send, 403, [*headers, ("content-length", str(len(body)))], body)
            self._observe(path, method, 403, started)
            return None
        if method == "OPTIONS":
            await _answer(send, 204, preflight_headers(origin), b"")
            self._observe(path, method, 204, started)
            return None
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in allow_headers(origin)]

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return {**scope, TRUSTED_ORIGIN: True}, send_with_cors

    def _observe(self, route: str, method: str, status: int, started: float) -> None:
        self._metrics.request_seconds.labels(route, method, str(status)).observe(
            time.perf_counter() - started)


async def _answer(send: Send, status: int, headers: Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})

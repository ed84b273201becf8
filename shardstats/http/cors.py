"""Events sent by web pages (``/tracker.js``): which cross-origin POSTs are taken, and the
CORS headers they get. Pure decisions on header values; ``LeanFront`` applies them, so they
hold on the path that serves real traffic (every request enters through it).

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

INGEST_PATHS = frozenset({"/analytics", "/analytics/batch"})
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


def allow_headers(origin: bytes) -> Headers:
    """Added to every answer to a listed origin's POST (success or error alike)."""
    return [
        ("access-control-allow-origin", origin.decode("latin-1")),
        ("access-control-expose-headers", "Retry-After, X-Shardstats-Error"),
        ("vary", "Origin"),
    ]


def preflight_headers(origin: bytes) -> Headers:
    return [
        ("access-control-allow-origin", origin.decode("latin-1")),
        ("access-control-allow-methods", "POST"),
        ("access-control-allow-headers", "Content-Type"),
        ("access-control-max-age", PREFLIGHT_MAX_AGE),
        ("vary", "Origin"),
    ]

"""``/analytics`` (``POST`` one event, ``GET``/``HEAD`` one hour's counts) served straight from
ASGI, without Quart's per-request machinery; every other path goes to the Quart app.

Quart costs ~126 µs of CPU per request here, more than the whole aggregation path, and these
two routes are nearly all the traffic. ``HotRoutes`` is the route logic as plain functions
(query bytes and the ``Authorization`` header in, a ``Reply`` out); ``LeanFront`` is the ASGI
app the server runs: it answers ``/analytics`` through ``HotRoutes`` (the one implementation
of that path: other methods get 405 here too) and hands everything else to Quart.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from shardstats.cluster.barrier import Consistency
from shardstats.core.events import hour_of
from shardstats.core.validation import event_from_query, timestamp_from_query
from shardstats.errors import InvalidInput, ShardstatsError, Unavailable
from shardstats.http.cors import CROSS_ORIGIN_METHODS, INGEST_PATHS, TRUSTED_ORIGIN, CrossOrigin
from shardstats.http.metrics import Metrics, method_label
from shardstats.shards.service import Service

log = logging.getLogger("shardstats.http")

ERROR_HEADER = "x-shardstats-error"  # a 400's message; its problem in the two below
ERROR_FIELD_HEADER = "x-shardstats-error-field"
ERROR_REASON_HEADER = "x-shardstats-error-reason"
Reply = tuple[int, list[tuple[str, str]], bytes]
BEARER_INGEST = ("www-authenticate", 'Bearer realm="shardstats ingest"')
BEARER_QUERY = ("www-authenticate", 'Bearer realm="shardstats query"')
_JSON = ("content-type", "application/json")
CONSISTENCY_HEADER = "shardstats-consistency"
_INTERNAL_ERROR = b'{"error":"internal error"}'
_TOKEN_ERROR = b'{"error":"missing or invalid bearer token"}'


def token_checker(token: str) -> Callable[[str | None], bool]:
    """Accept ``Authorization: Bearer <token>``; an empty configured token accepts anything."""
    if not token:
        return lambda header: True
    expected = token.encode()

    def check(header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        # compare_digest: the time taken does not reveal how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)

    return check


def json_error(exc: ShardstatsError) -> Reply:
    if exc.status == 500:
        log.error("GET failed: %s", exc)
    if isinstance(exc, InvalidInput):
        document = exc.as_json()
    else:
        document = {"error": "internal error" if exc.status == 500 else str(exc)}
    body = json.dumps(document, separators=(",", ":")).encode()
    return exc.status, [_JSON, *retry_after(exc)], body


def retry_after(exc: ShardstatsError) -> list[tuple[str, str]]:
    return [("retry-after", str(exc.retry_after))] if isinstance(exc, Unavailable) else []


class HotRoutes:
    def __init__(self, service: Service, metrics: Metrics) -> None:
        self._service = service
        self._metrics = metrics
        self.ingest_allowed = token_checker(service.settings.ingest_token)
        self.query_allowed = token_checker(service.settings.query_token)
        self.browser_origins = service.settings.browser_origin_set

    async def post(self, query: bytes, authorization: str | None, *,
                   browser: bool = False) -> Reply:
        """``browser``: sent by a page of a ``browser_origins`` site (no token needed)."""
        if not (browser or self.ingest_allowed(authorization)):
            return 401, [BEARER_INGEST], b""
        service = self._service
        try:
            event = event_from_query(query, service.clock.now_ms(), service.limits)
            await service.submit(event)
        except ShardstatsError as exc:
            return self._post_error(exc)
        self._metrics.accepted.inc()
        return 204, [], b""

    def _post_error(self, exc: ShardstatsError) -> Reply:
        headers = retry_after(exc)
        if isinstance(exc, InvalidInput):
            self._metrics.reject(exc.problem)
            log.info("POST rejected: %s", exc)
            headers += [(ERROR_HEADER, str(exc)), (ERROR_FIELD_HEADER, exc.problem.field),
                        (ERROR_REASON_HEADER, exc.problem.reason)]
        elif exc.status == 500:
            log.error("POST failed: %s", exc)
        return exc.status, headers, b""

    async def get(self, query: bytes, authorization: str | None) -> Reply:
        if not self.query_allowed(authorization):
            return 401, [_JSON, BEARER_QUERY], _TOKEN_ERROR
        try:
            hour = hour_of(timestamp_from_query(query))
            consistency = await self._service.read_barrier()
            counts = await self._service.query(hour)
        except ShardstatsError as exc:
            return json_error(exc)
        body = b'{"clicks":%d,"impressions":%d,"unique_users":%d}' % (
            counts.clicks, counts.impressions, counts.unique_users)
        return 200, [_JSON, *consistency_header(consistency)], body


def consistency_header(consistency: Consistency) -> list[tuple[str, str]]:
    """Cluster mode, the log unreachable: the answer is this node's own state."""
    return [] if consistency is Consistency.FRESH else [(CONSISTENCY_HEADER, "stale")]


ASGIApp = Callable[..., Awaitable[None]]


def _finish_unhurried(send: Any) -> Any:
    """Let hypercorn finish its bookkeeping on the last body message.

    Quart-Trio cancels the request's nursery as soon as it sees the disconnect message, which
    hypercorn may emit while it is still inside the final ``send`` (restarting the idle timer
    of a keep-alive connection). Cancelled there, the connection is never recycled or closed:
    it lingers idle until the client leaves, and SIGTERM waits out the whole grace period for
    it. Shielding that one call (with a deadline of its own) lets it finish.
    """

    async def send_last_shielded(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 10):
                await send(message)
        else:
            await send(message)

    return send_last_shielded


ANALYTICS = "/analytics"
LEAN_METHODS = ("GET", "HEAD", "POST")  # on ANALYTICS; any other method answers 405
ALLOW = ("allow", ", ".join(LEAN_METHODS))
_METHOD_NOT_ALLOWED = b'{"error":"method not allowed"}'


class LeanFront:
    """The ASGI app to serve: ``/analytics`` answered by ``HotRoutes``, the rest by ``inner``
    (the Quart app, which also runs the lifespan: start-up and shutdown of the service)."""

    def __init__(self, inner: ASGIApp, routes: HotRoutes, metrics: Metrics) -> None:
        self._inner = inner
        self._routes = routes
        self._latency: dict[tuple[str, int], Any] = {}  # label lookups cached per series
        self._metrics = metrics
        self._cross_origin = CrossOrigin(routes.browser_origins, metrics)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        if scope["path"] in INGEST_PATHS and scope["method"] in CROSS_ORIGIN_METHODS:
            # Pages of other sites: refusals and preflights are answered here (``cors``).
            admitted = await self._cross_origin.admit(scope, send)
            if admitted is None:
                return
            scope, send = admitted
        if scope["path"] != ANALYTICS:
            await self._inner(scope, receive, _finish_unhurried(send))
            return
        started = time.perf_counter()
        method = scope["method"]
        try:
            status, headers, body = await self._answer(method, scope)
        except Exception:
            log.exception("unhandled error on %s %s", method_label(method), ANALYTICS)
            # The contract: POST answers never have a body, even a 500.
            status, headers, body = (
                (500, [], b"") if method == "POST" else (500, [_JSON], _INTERNAL_ERROR)
            )
        if status != 204:
            headers = [*headers, ("content-length", str(len(body)))]
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        })
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        # Labels from fixed sets only (method_label), so this cache stays small.
        key = (method_label(method), status)
        observe = self._latency.get(key)
        if observe is None:
            observe = self._metrics.request_seconds.labels(ANALYTICS, key[0], str(status))
            self._latency[key] = observe
        observe.observe(time.perf_counter() - started)

    async def _answer(self, method: str, scope: Any) -> Reply:
        """The reply to one ``/analytics`` request (a HEAD gets a GET's headers, no body)."""
        if method == "POST":
            return await self._routes.post(scope["query_string"], _authorization(scope),
                                           browser=TRUSTED_ORIGIN in scope)
        if method in ("GET", "HEAD"):
            return await self._routes.get(scope["query_string"], _authorization(scope))
        return 405, [_JSON, ALLOW], _METHOD_NOT_ALLOWED


def _authorization(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            value_text: str = value.decode("latin-1")
            return value_text
    return None

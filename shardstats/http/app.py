"""The application: ``/analytics`` in the lean front (``http.hot``), every other route in a
Quart-Trio app behind it, which also runs the lifespan (start and shutdown of the service).

Thin by design: validation lives in ``core``, state in the shards. Every ``ShardstatsError``
knows its HTTP status; the routes only render it:
- POST answers have an empty body; the reason for a 400 goes in ``X-Shardstats-Error``;
- GET answers 400 with ``{"error": message, "field": ..., "reason": ...}``;
- 503 carries ``Retry-After``.

Run it with ``shardstats serve`` or ``hypercorn -k trio 'shardstats.http.app:asgi_app()'``
(the factory reads ``$SHARDSTATS_CONFIG`` and ``SHARDSTATS_*``).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from importlib import resources
from typing import Any

import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from shardstats.config import Settings, load_settings
from shardstats.core.events import HOUR_MS, MAX_TIMESTAMP_MS
from shardstats.core.ranges import range_from_query
from shardstats.errors import BatchTooLarge, DataDirLocked, DictionaryBehind, ShardstatsError
from shardstats.http.assets import JAVASCRIPT, Asset, static_asset, swagger_asset
from shardstats.http.batch import BatchRoute
from shardstats.http.cors import TRUSTED_ORIGIN
from shardstats.http.hot import (
    BEARER_INGEST,
    BEARER_QUERY,
    HotRoutes,
    LeanFront,
    Reply,
    consistency_header,
    json_error,
)
from shardstats.http.metrics import CONTENT_TYPE, Metrics, method_label
from shardstats.http.openapi import DOCUMENT, docs_page
from shardstats.logs import configure_logging
from shardstats.shards.service import Service

log = logging.getLogger("shardstats.http")

EXIT_LOCKED, EXIT_DICTIONARY_BEHIND = 3, 4  # as `shardstats serve`
ResponseValue = tuple[Any, int, dict[str, str]] | tuple[Any, int]


class App(LeanFront):
    """The app to serve, and the Quart app behind it (``quart.config``, ``quart.test_app()``
    to run the lifespan in tests)."""

    def __init__(self, quart: QuartTrio, hot: HotRoutes, metrics: Metrics) -> None:
        super().__init__(quart, hot, metrics)
        self.quart = quart


def create_app(settings: Settings | None = None, service: Service | None = None) -> App:
    """Build the app to serve; with no ``service`` it starts and stops its own with the
    lifespan."""
    service = service or Service(settings or load_settings())
    metrics = Metrics(service)
    service.registry.observer = metrics
    hot = HotRoutes(service, metrics)
    return App(_quart_app(service, metrics, hot), hot, metrics)


def _quart_app(service: Service, metrics: Metrics, hot: HotRoutes) -> QuartTrio:
    """Every route but ``/analytics``, and the lifespan."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = service.settings.max_batch_bytes
    app.extensions["shardstats"] = service

    @app.before_serving
    async def start_service() -> None:
        # Returns once the lock is held; recovery goes on while /healthz says 503.
        try:
            await app.nursery.start(service.run)
        except (DataDirLocked, DictionaryBehind) as exc:
            if not app.config.get("SHARDSTATS_EXIT_WHEN_LOCKED"):
                raise
            # Under the hypercorn command a failed lifespan start still exits 0, which a
            # supervisor reads as a clean stop. Nothing is open yet: leave now, and say why.
            log.critical("%s", exc)
            os._exit(EXIT_LOCKED if isinstance(exc, DataDirLocked) else EXIT_DICTIONARY_BEHIND)
        if app.config.get("SHARDSTATS_FREEZE_GC"):  # a server process, not a test client
            app.nursery.start_soon(_freeze_when_ready, service)

    @app.after_serving
    async def stop_service() -> None:
        await service.shutdown()
        if app.config.get("SHARDSTATS_FREEZE_GC"):
            gc.unfreeze()  # the app and service are cycles: let a stopped app be collected

    batch = BatchRoute(service, metrics)
    ingest, query = hot.ingest_allowed, hot.query_allowed

    @app.post("/analytics/batch", provide_automatic_options=False)
    async def post_batch() -> ResponseValue:
        # A listed browser origin (judged by the front, ``cors``) needs no token.
        browser = TRUSTED_ORIGIN in request.scope
        if not (browser or ingest(request.headers.get("Authorization"))):
            return {"error": "missing or invalid bearer token"}, 401, dict([BEARER_INGEST])
        limit = service.settings.max_batch_bytes
        if browser:  # no token: bounded by what a browser's beacon or keepalive fetch carries
            limit = min(limit, service.settings.browser_max_batch_bytes)
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge()
        try:
            return _reply(await batch.post(await _body_chunks(limit)))
        except BatchTooLarge as exc:
            # Answered like a body over max_batch_bytes (below: 413, connection closed).
            raise RequestEntityTooLarge(str(exc)) from None

    @app.get("/analytics/range", provide_automatic_options=False)
    async def get_range() -> ResponseValue:
        if not query(request.headers.get("Authorization")):
            return {"error": "missing or invalid bearer token"}, 401, dict([BEARER_QUERY])
        try:
            wanted = range_from_query(request.query_string, service.settings.max_range_hours)
            consistency = await service.read_barrier()
            total, segments = await service.range_counts(wanted)
        except ShardstatsError as exc:
            return _reply(json_error(exc))
        return {
            "from": wanted.first_hour * HOUR_MS,
            "to": min((wanted.last_hour + 1) * HOUR_MS - 1, MAX_TIMESTAMP_MS),
            "step": wanted.step,
            "total": total.as_json(),
            "series": [segment.as_json() for segment in segments],
        }, 200, dict(consistency_header(consistency))

    @app.get("/metrics")
    async def prometheus() -> ResponseValue:
        return metrics.render(), 200, {"Content-Type": CONTENT_TYPE}

    @app.get("/")
    async def dashboard() -> ResponseValue:
        return DASHBOARD, 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.get("/openapi.json")
    async def openapi_document() -> ResponseValue:
        return DOCUMENT, 200

    @app.get("/docs")
    async def docs() -> ResponseValue:
        return DOCS_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.get("/docs/swagger-ui-bundle.js")
    async def swagger_js() -> ResponseValue:
        return _asset(await trio.to_thread.run_sync(swagger_asset, "swagger-ui-bundle.js"))

    @app.get("/docs/swagger-ui.css")
    async def swagger_css() -> ResponseValue:
        return _asset(await trio.to_thread.run_sync(swagger_asset, "swagger-ui.css"))

    @app.get("/tracker.js")
    async def tracker() -> ResponseValue:
        return _asset(TRACKER)

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.get("/healthz")
    async def healthz() -> ResponseValue:
        if not service.ready:
            return {"status": "recovering"}, 503, {"Retry-After": "1"}
        cluster = service.cluster.statistics() if service.cluster is not None else None
        if cluster is None:
            return {"status": "ready"}, 200
        applied = cluster.materializer
        body = {"status": "ready", "node": cluster.node_name,
                "log_connected": cluster.log.connected, "applied_seq": applied.applied_seq,
                "lag_records": applied.lag_records,
                "lag_seconds": round(applied.lag_seconds, 3)}
        if not applied.caught_up:
            body["status"] = "catching up"
        elif applied.lag_seconds > service.settings.cluster_max_lag_seconds:
            body["status"] = "lagging"
        if body["status"] != "ready":  # a balancer sends the traffic elsewhere meanwhile
            return body, 503, {"Retry-After": "1"}
        return body, 200

    @app.after_request
    async def strip_empty_body_headers(response: Response) -> Response:
        started = getattr(g, "started", None)
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.request_seconds.labels(
                rule, method_label(request.method), str(response.status_code)
            ).observe(time.perf_counter() - started)
        # Quart labels every response text/html; an empty body has nothing to describe, and a
        # 204 must not carry Content-Length either.
        if response.status_code in (204, 304):
            response.headers.pop("Content-Type", None)
            response.headers.pop("Content-Length", None)
        elif response.content_length == 0:
            response.headers.pop("Content-Type", None)
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> ResponseValue:
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        if exc.code == 413:
            # The refused body is still on the connection: close it rather than read it.
            headers["Connection"] = "close"
        return {"error": exc.description or exc.name}, exc.code or 500, headers

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> ResponseValue:
        log.exception("unhandled error on %s %s", method_label(request.method), request.path)
        return {"error": "internal error"}, 500

    return app


DOCS_PAGE = docs_page()
# An hour, then revalidated with its ETag: pages pick up a new version within the hour.
# Cross-Origin-Resource-Policy: pages of sites that require it (COEP) may load it too.
TRACKER = static_asset("tracker.js", JAVASCRIPT, "public, max-age=3600",
                       (("Cross-Origin-Resource-Policy", "cross-origin"),))
DASHBOARD = (resources.files("shardstats.http") / "static" / "dashboard.html").read_text("utf-8")
async def _freeze_when_ready(service: Service) -> None:
    """Once recovery is done, move everything alive (modules, the app, recovered hours: some
    60k objects on an empty server) out of the cyclic collector's sight. Otherwise every full
    collection walks them all again: ~18 ms on the event loop each time, which was the p99 of
    GETs during range queries (`tools/bench.py`). Frozen objects are still freed by reference
    counting when they go, but not cycles among them: ``stop_service`` unfreezes."""
    await service.wait_ready()
    gc.collect()
    gc.freeze()
    log.debug("%d objects frozen out of the collector's view", gc.get_freeze_count())


async def _body_chunks(limit: int) -> list[bytes]:
    """The request body as the chunks it arrived in: never joined into one 16 MiB buffer, whose
    allocation and copy held the event loop ~10-20 ms (``await request.get_data()`` makes two).
    Iterating bypasses Quart's MAX_CONTENT_LENGTH check of bodies without Content-Length, so
    the limit is enforced here too (a declared length over it is refused by Quart first)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        chunks.append(chunk)
    return chunks


def _asset(asset: Asset | None) -> ResponseValue:
    if asset is None:
        return {"error": "not installed: pip install swagger-ui-py"}, 404
    return _reply(asset.reply(request.headers.get("If-None-Match"),
                              request.headers.get("Accept-Encoding")))


def _reply(reply: Reply) -> ResponseValue:
    status, headers, body = reply
    return body, status, dict(headers)


def asgi_app(settings: Settings | None = None) -> App:
    """The app for the ``hypercorn`` command.

    ``hypercorn -k trio 'shardstats.http.app:asgi_app()'`` runs it with settings from
    ``$SHARDSTATS_CONFIG`` and ``SHARDSTATS_*``.
    """
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    app.quart.config["SHARDSTATS_EXIT_WHEN_LOCKED"] = True
    app.quart.config["SHARDSTATS_FREEZE_GC"] = True
    return app

"""The OpenAPI 3.1 document of every route, and the ``/docs`` page that shows it.

Written by hand rather than generated: the routes are few and the contract is exact; a test
checks every route of the app appears here and that the document validates. Settings are
named with ``_setting``: their defaults come from ``shardstats.config``, and a test checks no
description names a setting any other way.
``/docs`` is Swagger UI ("try it out" against this server), its files served by the server
itself from a package dependency, so it works offline; without JavaScript the page shows a
static rendering of the document.
"""

from __future__ import annotations

import html
import json
from typing import Any

from shardstats import __version__
from shardstats.config import describe
from shardstats.errors import Field, Reason

_SETTINGS = {setting.name: setting for setting in describe()}


def _setting(name: str) -> str:
    """A setting as descriptions name it: with its default, as the README table gives it."""
    return f"{name} (default {_SETTINGS[name].default_text})"


_TS = {"type": "string", "pattern": "^[0-9]+$", "examples": ["1795802400000"]}
_COUNTS = {
    "type": "object",
    "required": ["unique_users", "clicks", "impressions"],
    "properties": {
        "unique_users": {"type": "integer", "minimum": 0},
        "clicks": {"type": "integer", "minimum": 0},
        "impressions": {"type": "integer", "minimum": 0},
    },
}
_FIELD = {"type": "string", "enum": [f.value for f in Field],
          "description": "What is wrong: a parameter, or the query, line or body as a whole"}
_REASON = {"type": "string", "enum": [r.value for r in Reason], "description": "Why, as a code"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "For people; the wording may change"},
        "field": _FIELD,  # on a 400
        "reason": _REASON,  # on a 400
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, description: str, schema: dict[str, Any], required: bool = True
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


_RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
_UNAVAILABLE = {"description": "Overloaded or still recovering", "headers": _RETRY}
_INGEST_401 = {"description": "Ingest token required and missing or wrong"}
_ORIGIN_REFUSED = ("Sent from a web page (Origin header) whose origin is not in "
                   f"{_setting('browser_origins')}; the reason is in X-Shardstats-Error")
_ORIGIN_403 = {"description": _ORIGIN_REFUSED,
               "headers": {"X-Shardstats-Error": {"schema": {"type": "string"}}}}
_BROWSER_NOTE = (" A POST from a web page whose Origin is in "
                 f"{_setting('browser_origins')} needs no token "
                 "and gets CORS headers (a preflight OPTIONS is answered); any other Origin but "
                 "the server's own gets 403.")
_STATIC = {"description": "The file (ETag; 304 when If-None-Match holds it)"}
_NOT_MODIFIED = {"description": "Not modified (If-None-Match)"}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "shardstats",
        "version": __version__,
        "description": "Exact hourly unique users, clicks and impressions. An hour is "
        "timestamp // 3600000 (UTC). POSTs are acknowledged only once durable.",
    },
    # Relative to where this document is served: behind a proxy that serves shardstats
    # under a path prefix (/stats/openapi.json), "try it out" goes to /stats/analytics.
    "servers": [{"url": ".", "description": "the server that serves this document"}],
    "components": {
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": f"{_setting('ingest_token')} guards POST /analytics and "
            f"/analytics/batch; {_setting('query_token')} guards GET /analytics and "
            "/analytics/range."}},
        "schemas": {"Counts": _COUNTS, "Error": _ERROR},
    },
    "paths": {
        "/analytics": {
            "post": {
                "summary": "Record one event",
                "description": "Answers 204 once the event is durable (fsynced). A bearer "
                f"token is required when {_setting('ingest_token')} is set." + _BROWSER_NOTE,
                "security": [{}, {"bearer": []}],
                "parameters": [
                    _param("timestamp", "Milliseconds since the epoch, digits only; within "
                           f"the acceptance window: at most {_setting('accept_past_seconds')} "
                           f"back and {_setting('accept_future_seconds')} ahead", _TS),
                    _param("user", "Opaque user id: UTF-8, not empty, no longer than "
                           f"{_setting('max_user_bytes')} bytes, no control characters",
                           {"type": "string", "minLength": 1}),
                    _param("event", "Event kind",
                           {"type": "string", "enum": ["click", "impression"]}),
                    _param("id", "Optional client event id (1..128 bytes): a retry with the "
                           "same id for the same hour is acknowledged but counted once",
                           {"type": "string", "minLength": 1}, required=False),
                ],
                "responses": {
                    "204": {"description": "Durable"},
                    "400": {"description": "Invalid input; why is in the headers",
                            "headers": {
                                "X-Shardstats-Error": {"schema": {"type": "string"},
                                                       "description": "For people"},
                                "X-Shardstats-Error-Field": {"schema": _FIELD},
                                "X-Shardstats-Error-Reason": {"schema": _REASON},
                            }},
                    "401": _INGEST_401,
                    "403": _ORIGIN_403,
                    "500": {"description": "Could not be made durable"},
                    "503": _UNAVAILABLE,
                },
            },
            "get": {
                "summary": "Counts of one UTC hour",
                "security": [{}, {"bearer": []}],
                "parameters": [_param("timestamp", "Any time inside the hour, epoch ms", _TS)],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Counts"}, "The hour's counts"),
                    "400": _json({"$ref": "#/components/schemas/Error"}, "Invalid input"),
                    "401": _json({"$ref": "#/components/schemas/Error"}, "Token required"),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/analytics/batch": {
            "post": {
                "summary": "Record many events (newline-delimited JSON)",
                "description": "Each line is {\"timestamp\": ms, \"user\": \"...\", \"event\": "
                "\"click\"|\"impression\"} (optionally \"id\") validated like a single "
                "POST. The answer comes once every accepted event is durable. errors groups "
                "every verdict other than accepted and blank with its count and lines "
                "(\"2,5-9\"); results[i] is the verdict of line i+1, given when it is no larger "
                "than the body plus 4 KiB (always for real events; not for a body of mostly "
                "blank or one-character lines). A body larger than "
                f"{_setting('max_batch_bytes')}, or with more lines than "
                f"{_setting('max_batch_lines')} (a final newline does not start another), is "
                "refused whole with 413, before any line is judged." + _BROWSER_NOTE +
                " Such a batch (no token) may be at most "
                f"{_setting('browser_max_batch_bytes')}.",
                "security": [{}, {"bearer": []}],
                "requestBody": {"required": True,
                                "content": {"application/x-ndjson": {"schema": {
                                    "type": "string"}}}},
                "responses": {
                    "200": _json({
                        "type": "object",
                        "required": ["accepted", "rejected", "failed", "errors"],
                        "properties": {
                            "accepted": {"type": "integer"},
                            "rejected": {"type": "integer"},
                            "failed": {"type": "integer"},
                            "errors": {"type": "array", "items": {
                                "type": "object",
                                "required": ["verdict", "count", "lines"],
                                "properties": {
                                    "verdict": {"type": "string"},
                                    "count": {"type": "integer"},
                                    "lines": {"type": "string",
                                              "description": "line numbers and ranges, "
                                              "ascending: 2,5-9,12"},
                                }}},
                            "results": {"type": "array", "items": {"type": "string"}},
                        },
                    }, "Verdicts: accepted, rejected: reason, failed: reason, blank"),
                    "401": _json({"$ref": "#/components/schemas/Error"}, "Token required"),
                    "403": _json({"$ref": "#/components/schemas/Error"},
                                 _ORIGIN_REFUSED),
                    "413": _json({"$ref": "#/components/schemas/Error"},
                                 "Body over the byte or line limit"),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/analytics/range": {
            "get": {
                "summary": "Exact totals and a series over a range of hours",
                "description": "unique_users in total and per day is the size of the union of "
                "the hourly user sets: exact, not a sum. A range covers at most "
                f"{_setting('max_range_hours')} hours.",
                "security": [{}, {"bearer": []}],
                "parameters": [
                    _param("from", "Start, epoch ms (its hour is included)", _TS),
                    _param("to", "End, epoch ms (its hour is included)", _TS),
                    _param("step", "Series step", {"type": "string", "enum": ["hour", "day"],
                                                   "default": "hour"}, required=False),
                ],
                "responses": {
                    "200": _json({
                        "type": "object",
                        "required": ["from", "to", "step", "total", "series"],
                        "properties": {
                            "from": {"type": "integer"},
                            "to": {"type": "integer"},
                            "step": {"type": "string"},
                            "total": {"$ref": "#/components/schemas/Counts"},
                            "series": {"type": "array", "items": {
                                "allOf": [{"$ref": "#/components/schemas/Counts"}, {
                                    "type": "object",
                                    "properties": {"start": {"type": "integer"}}}]}},
                        },
                    }, "Totals and series"),
                    "400": _json({"$ref": "#/components/schemas/Error"}, "Invalid input"),
                    "401": _json({"$ref": "#/components/schemas/Error"}, "Token required"),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/healthz": {"get": {"summary": "Readiness", "responses": {
            "200": {"description": "Ready"}, "503": _UNAVAILABLE}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format)", "responses": {
            "200": {"description": "Metrics", "content": {"text/plain": {
                "schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}}}},
        "/docs": {"get": {"summary": "This document in Swagger UI (try it out; no CDN)",
                          "responses": {"200": {"description": "HTML", "content": {
                              "text/html": {"schema": {"type": "string"}}}}}}},
        "/docs/swagger-ui-bundle.js": {"get": {"summary": "Swagger UI script (/docs)",
                                               "responses": {"200": _STATIC,
                                                             "304": _NOT_MODIFIED}}},
        "/docs/swagger-ui.css": {"get": {"summary": "Swagger UI style sheet (/docs)",
                                         "responses": {"200": _STATIC, "304": _NOT_MODIFIED}}},
        "/tracker.js": {"get": {"summary": "The tracker script for web pages: <script defer "
                                "src=\".../tracker.js\"></script>",
                                "responses": {"200": _STATIC, "304": _NOT_MODIFIED}}},
        "/": {"get": {"summary": "Dashboard: the current hour, a range per hour or day, CSV",
                      "responses": {"200": {"description": "HTML", "content": {"text/html": {
                          "schema": {"type": "string"}}}}}}},
    },
}


# Swagger UI's own defaults, less the online validator badge (it would call a server
# outside) and the top bar (it needs the standalone preset).
_SWAGGER_INIT = """window.ui = SwaggerUIBundle({
  url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  displayRequestDuration: true, presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"
});"""


def docs_page() -> str:
    """Swagger UI on ``openapi.json`` (its files served by the server itself, ``assets``;
    every URL relative, so the page works under a proxy's path prefix),
    with a static rendering of ``DOCUMENT`` for browsers without JavaScript."""
    return "".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width, initial-scale=1">',
        f"<title>shardstats {html.escape(__version__)} API</title>",
        '<link rel=stylesheet href="docs/swagger-ui.css">',
        "<style>body{margin:0}.static{font:15px/1.45 system-ui,sans-serif;max-width:60em;"
        "margin:2em auto;padding:0 1em}</style></head><body>",
        '<div id="swagger-ui"></div>',
        f'<noscript><div class="static">{_static_reference()}</div></noscript>',
        '<script src="docs/swagger-ui-bundle.js"></script>',
        f"<script>{_SWAGGER_INIT}</script>",
        "</body></html>",
    ])


def _static_reference() -> str:
    """``DOCUMENT`` as plain HTML."""
    esc = html.escape
    parts = [
        f"<h1>shardstats API <small>{esc(__version__)}</small></h1>",
        f"<p>{esc(DOCUMENT['info']['description'])}</p>",
        '<p>Machine-readable: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).</p>',
    ]
    for path, operations in DOCUMENT["paths"].items():
        for method, op in operations.items():
            parts.append(f"<h2>{method.upper()} <code>{esc(path)}</code> — "
                         f"{esc(op['summary'])}</h2>")
            if "description" in op:
                parts.append(f"<p>{esc(op['description'])}</p>")
            if op.get("parameters"):
                parts.append("<table><tr><th>parameter</th><th>required</th><th>schema</th>"
                             "<th>meaning</th></tr>")
                for p in op["parameters"]:
                    parts.append(
                        f"<tr><td><code>{esc(p['name'])}</code></td>"
                        f"<td>{'yes' if p['required'] else 'no'}</td>"
                        f"<td><code>{esc(json.dumps(p['schema']))}</code></td>"
                        f"<td>{esc(p['description'])}</td></tr>")
                parts.append("</table>")
            parts.append("<ul>")
            for status, response in op["responses"].items():
                parts.append(f"<li><b>{esc(status)}</b> {esc(response['description'])}</li>")
            parts.append("</ul>")
    return "".join(parts)

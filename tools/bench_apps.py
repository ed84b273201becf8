"""Reference apps for ``tools/bench.py``: the ceilings of the stack shardstats runs on.

- ``hello``: a hello-world Quart-Trio app with the two ``/analytics`` routes answering at once
  (POST: 204, empty body; GET: a constant JSON body) and ``/healthz`` — the Quart-Trio ceiling;
- ``bare``: the same three routes as a bare ASGI callable (no framework) — the hypercorn-trio
  ceiling.

Both are served by ``hypercorn.trio.serve`` in this process with the very hypercorn settings
``shardstats serve`` uses (``shardstats.server.hypercorn_config``), and print the same
``listening on http://HOST:PORT`` line on stderr, so the bench starts all servers one way::

    python -m tools.bench_apps hello --bind 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from hypercorn.trio import serve
from quart_trio import QuartTrio

from shardstats.config import Settings
from shardstats.server import hypercorn_config

log = logging.getLogger("bench_apps")

COUNTS = {"unique_users": 0, "clicks": 0, "impressions": 0}
COUNTS_BODY = json.dumps(COUNTS).encode()
READY_BODY = b'{"status":"ready"}'

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def create_hello_app() -> QuartTrio:
    app = QuartTrio(__name__)

    @app.post("/analytics", provide_automatic_options=False)
    async def post_event() -> tuple[str, int]:
        return "", 204

    @app.get("/analytics", provide_automatic_options=False)
    async def get_counts() -> tuple[dict[str, int], int]:
        return COUNTS, 200

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ready"}, 200

    return app


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI 3 with lifespan; answers like ``hello`` with no framework in between."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    headers: list[tuple[bytes, bytes]] = []
    if path == "/analytics" and method == "POST":
        status, body = 204, b""
    elif path == "/analytics" and method == "GET":
        status, body = 200, COUNTS_BODY
        headers.append((b"content-type", b"application/json"))
    elif path == "/healthz" and method == "GET":
        status, body = 200, READY_BODY
        headers.append((b"content-type", b"application/json"))
    else:
        status, body = 404, b""
    if status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_until_signal(app: Any, bind: str) -> None:
    """Serve ``app`` under the shardstats hypercorn settings until SIGTERM/SIGINT."""
    config = hypercorn_config(Settings(bind=bind))
    stop = trio.Event()

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        log.info("listening on %s", ", ".join(binds))
        await stop.wait()
        nursery.cancel_scope.deadline = trio.current_time() + 5


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_apps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", choices=["hello", "bare"])
    parser.add_argument("--bind", default="127.0.0.1:0", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app: Any = create_hello_app() if args.app == "hello" else bare_app
    trio.run(serve_until_signal, app, args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main())

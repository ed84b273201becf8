"""Helpers for driving the app in-process, through either front end.

The server answers ``/analytics`` through ``LeanFront`` (plain ASGI, ``shardstats.http.hot``)
and everything else through the Quart app; the Quart app also routes ``/analytics`` itself. The
``harness`` fixture runs each contract test against both:
- ``quart``: Quart's test client, with the exact query-string bytes the test names
  (``scope_base``), so percent-encoding, repeated keys and ``+`` reach the app untouched;
- ``lean``: ASGI messages straight into ``lean_front(app)``, the response exactly as sent.

``raw_asgi`` is also the way to see headers exactly: Quart's test client rebuilds responses
and re-adds a default ``Content-Type`` to every one it hands back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from quart.typing import TestClientProtocol
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS
from shardstats.http.app import create_app, lean_front
from shardstats.shards.service import Service

# The clock of every test: five minutes before the end of hour K, so that (K+1)*HOUR_MS is
# inside the default 10-minute future window and K-1 is well inside the 30-day past window.
K = 472_222  # 2023-11-14 22:00 UTC
NOW_MS = (K + 1) * HOUR_MS - 5 * 60_000

FRONTS = ("quart", "lean")
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def qs(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("ascii")


@dataclass
class RawResponse:
    """A response as the ASGI app sent it; quacks like Quart's test response where needed."""

    status_code: int
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def headers(self) -> Headers:
        return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers])

    @property
    def mimetype(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip()

    def header_names(self) -> set[str]:
        return {name.decode("latin-1").lower() for name, _ in self.raw_headers}

    async def get_data(self) -> bytes:
        return self.body


async def raw_asgi(
    app: ASGIApp,
    method: str,
    path: str,
    query: bytes,
    *,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RawResponse:
    """One HTTP request straight through the ASGI interface."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.1"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }
    sent_request = False
    messages: list[dict[str, Any]] = []
    done = trio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    with trio.fail_after(10):
        await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    sent = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return RawResponse(start["status"], list(start.get("headers", [])), sent)


@dataclass
class Harness:
    front: str
    app: QuartTrio
    asgi: ASGIApp  # what the server would serve for this front
    service: Service
    client: TestClientProtocol
    settings: Settings
    clock: FixedClock

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    async def request(
        self, method: str, query: str | bytes, path: str = "/analytics", *, body: bytes = b""
    ) -> Any:
        if self.front == "lean":
            return await raw_asgi(self.asgi, method, path, qs(query), body=body)
        with trio.fail_after(10):  # a hung request fails its test now, not at pytest's timeout
            # quart.typing's protocol wrongly makes ``json`` a required keyword of ``open``.
            return await self.client.open(  # type: ignore[call-arg]
                path, method=method, data=body, scope_base={"query_string": qs(query)}
            )

    async def post(self, query: str | bytes) -> Any:
        return await self.request("POST", query)

    async def get(self, query: str | bytes) -> Any:
        return await self.request("GET", query)

    async def event(self, timestamp: int, user: str, kind: str = "click") -> None:
        """POST one event (user given percent-encoded) and insist on a 204."""
        response = await self.post(f"timestamp={timestamp}&user={user}&event={kind}")
        assert response.status_code == 204, (
            response.status_code,
            response.headers.get("X-Shardstats-Error"),
        )

    async def counts(self, timestamp: int) -> dict[str, int]:
        response = await self.get(f"timestamp={timestamp}")
        assert response.status_code == 200
        body: dict[str, int] = json.loads(await response.get_data())
        return body


async def wait_healthy(client: TestClientProtocol) -> None:
    """Poll ``/healthz`` (what a real client would do) until it says 200, for at most 10 s."""
    with trio.fail_after(10):
        while (await client.get("/healthz")).status_code != 200:  # noqa: ASYNC110 - polling HTTP
            await trio.sleep(0.002)


@asynccontextmanager
async def running_app(
    data_dir: Path | str,
    *,
    front: str = "quart",
    now_ms: int = NOW_MS,
    service_factory: Callable[[Settings, FixedClock], Service] | None = None,
    wait: bool = True,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """Build settings, service and app; run the app's lifespan around the block."""
    assert front in FRONTS
    settings = dataclasses.replace(Settings(data_dir=str(data_dir)), **overrides)
    clock = FixedClock(now_ms)
    service = (service_factory or Service)(settings, clock)
    app = create_app(settings, service)
    asgi: ASGIApp = lean_front(app) if front == "lean" else app
    async with app.test_app() as test_app:
        client = test_app.test_client()
        if wait:
            await wait_healthy(client)
        yield Harness(front, app, asgi, service, client, settings, clock)


@pytest.fixture(params=FRONTS)
def http_front(request: pytest.FixtureRequest) -> str:
    front: str = request.param
    return front


@pytest.fixture
async def harness(tmp_path: Path, http_front: str) -> AsyncIterator[Harness]:
    async with running_app(tmp_path / "data", front=http_front) as h:
        yield h


@pytest.fixture
def make_harness(
    tmp_path: Path, http_front: str
) -> Callable[..., AbstractAsyncContextManager[Harness]]:
    """``async with make_harness(inbox_size=1) as h:`` — a harness with other settings."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Harness]:
        return running_app(tmp_path / "data", front=http_front, **overrides)

    return make

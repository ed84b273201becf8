"""Helpers for driving the app in-process, exactly as the server runs it.

Every request goes as ASGI messages into the app ``create_app`` builds (the lean front,
which answers ``/analytics`` itself and hands the other paths to Quart), with the exact
query-string bytes the test names (percent-encoding, repeated keys and ``+`` reach the app
untouched), and comes back exactly as sent (``RawResponse``: Quart's own test client would
rebuild responses and re-add a default ``Content-Type``). The Quart app behind the front runs
the lifespan, as under hypercorn.
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
from werkzeug.datastructures import Headers

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS
from shardstats.http.app import App, create_app
from shardstats.shards.service import Service

# The clock of every test: five minutes before the end of hour K, so that (K+1)*HOUR_MS is
# inside the default 10-minute future window and K-1 is well inside the 30-day past window.
K = 472_222  # 2023-11-14 22:00 UTC
NOW_MS = (K + 1) * HOUR_MS - 5 * 60_000

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

    async def get_data(self, as_text: bool = False) -> Any:
        return self.body.decode() if as_text else self.body

    async def get_json(self) -> Any:
        return json.loads(self.body)


async def raw_asgi(
    app: ASGIApp,
    method: str,
    path: str,
    query: bytes,
    *,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    hung_after: float = 10,
) -> RawResponse:
    """One HTTP request straight through the ASGI interface (a hung one fails its test
    after ``hung_after`` seconds, not at pytest's timeout)."""
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

    with trio.fail_after(hung_after):
        await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    sent = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return RawResponse(start["status"], list(start.get("headers", [])), sent)


class Client:
    """Requests to an ASGI app by URL (``/path?query``), like a test client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def open(self, url: str, method: str = "GET", *, data: bytes | str = b"",
                   headers: dict[str, str] | None = None) -> RawResponse:
        path, _, query = url.partition("?")
        return await raw_asgi(
            self.app, method, path, qs(query),
            body=data.encode() if isinstance(data, str) else data,
            headers=[(k.lower().encode("latin-1"), v.encode("latin-1"))
                     for k, v in (headers or {}).items()],
        )

    async def get(self, url: str, **kwargs: Any) -> RawResponse:
        return await self.open(url, "GET", **kwargs)

    async def post(self, url: str, **kwargs: Any) -> RawResponse:
        return await self.open(url, "POST", **kwargs)


@dataclass
class Harness:
    app: App
    service: Service
    client: Client
    settings: Settings
    clock: FixedClock

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    async def request(
        self, method: str, query: str | bytes, path: str = "/analytics", *, body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None, hung_after: float = 10,
    ) -> RawResponse:
        return await raw_asgi(self.app, method, path, qs(query), body=body, headers=headers,
                              hung_after=hung_after)

    async def post(self, query: str | bytes) -> RawResponse:
        return await self.request("POST", query)

    async def get(self, query: str | bytes) -> RawResponse:
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


async def wait_healthy(client: Client) -> None:
    """Poll ``/healthz`` (what a real client would do) until it says 200, for at most 10 s."""
    with trio.fail_after(10):
        while (await client.get("/healthz")).status_code != 200:  # noqa: ASYNC110 - polling HTTP
            await trio.sleep(0.002)


@asynccontextmanager
async def running_app(
    data_dir: Path | str,
    *,
    now_ms: int = NOW_MS,
    service_factory: Callable[[Settings, FixedClock], Service] | None = None,
    wait: bool = True,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """Build settings, service and app; run the app's lifespan around the block."""
    settings = dataclasses.replace(Settings(data_dir=str(data_dir)), **overrides)
    clock = FixedClock(now_ms)
    service = (service_factory or Service)(settings, clock)
    app = create_app(settings, service)
    async with app.quart.test_app():
        client = Client(app)
        if wait:
            await wait_healthy(client)
        yield Harness(app, service, client, settings, clock)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_app(tmp_path / "data") as h:
        yield h


@pytest.fixture
def make_harness(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Harness]]:
    """``async with make_harness(inbox_size=1) as h:`` — a harness with other settings."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Harness]:
        return running_app(tmp_path / "data", **overrides)

    return make

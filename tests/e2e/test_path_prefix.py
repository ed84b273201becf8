"""Behind a reverse proxy that serves shardstats under a path prefix (``location /stats/`` in
nginx, ``proxy_pass http://127.0.0.1:8080/``): the dashboard, /docs with "try it out", and
/tracker.js must reach the API through the prefix, in headless Chromium.

The proxy here is a few lines of ``http.server``: it strips ``/stats`` and forwards the rest,
headers and body as they are (``Host`` too, as ``proxy_set_header Host $host`` would), and
answers 404 to anything outside the prefix, so a page that asks for ``/analytics`` at the
root fails like it would behind a real one.
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.browser import (
    TIMEOUT_MS,
    LocalServer,
    QuietHandler,
    Site,
    answered_status,
    chromium,
    needs_chromium,
    try_out_get_counts,
)
from tests.e2e.conftest import ServerFactory
from tools.spawn import ShardstatsServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e, needs_chromium]
PREFIX = "/stats"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}


class PrefixProxy(LocalServer):
    """``http://127.0.0.1:PORT/stats/X`` -> ``UPSTREAM/X``; everything else 404."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        host, port = target.hostname or "127.0.0.1", target.port
        self.requested: list[str] = []
        proxy = self

        class Handler(QuietHandler):
            def _forward(self) -> None:
                proxy.requested.append(f"{self.command} {self.path}")
                if not (self.path == PREFIX or self.path.startswith(PREFIX + "/")):
                    self._send(404, [("Content-Type", "text/plain")], b"outside the prefix")
                    return
                path = self.path[len(PREFIX):] or "/"
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(host, port, timeout=10)
                try:
                    upstream.request(self.command, path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self._send(answer.status, [(k, v) for k, v in answer.getheaders()
                                               if k.lower() not in HOP_BY_HOP
                                               and k.lower() != "content-length"], data)
                finally:
                    upstream.close()

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_OPTIONS = _forward

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.origin + PREFIX

    def outside(self) -> list[str]:
        """Requests outside the prefix, but the browser's own ``/favicon.ico``."""
        return [r for r in self.requested if r != "GET /favicon.ico"
                and not r.split(" ", 1)[1].startswith(PREFIX + "/")
                and r.split(" ", 1)[1] != PREFIX]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def served(shardstats_server: ServerFactory, data_dir: Path) -> Iterator[
        tuple[ShardstatsServer, PrefixProxy, Site]]:
    with Site({}) as site:
        server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": site.origin})
        with PrefixProxy(server.url) as proxy:
            yield server, proxy, site


def hour_counts(server: ShardstatsServer, ts: int) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{server.url}/analytics?timestamp={ts}", timeout=5).json()
    return answer


def test_dashboard_under_a_prefix(served: tuple[ShardstatsServer, PrefixProxy, Site],
                                  browser: Browser) -> None:
    server, proxy, _ = served
    now = int(time.time() * 1000)
    for user in ("ann", "bob"):
        assert httpx.post(f"{server.url}/analytics?timestamp={now}&user={user}&event=click",
                          timeout=5).status_code == 204
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(proxy.url + "/")
    page.wait_for_function("document.getElementById('current-clicks').innerText.trim() === '2'")
    assert page.inner_text("#current-users").strip() == "2"
    docs = page.get_attribute("footer a[href*='docs']", "href")
    assert docs is not None and urllib.parse.urljoin(page.url, docs) == proxy.url + "/docs"
    assert proxy.outside() == []
    page.close()


def test_docs_try_it_out_under_a_prefix(served: tuple[ShardstatsServer, PrefixProxy, Site],
                                        browser: Browser) -> None:
    server, proxy, _ = served
    now = int(time.time() * 1000)
    assert httpx.post(f"{server.url}/analytics?timestamp={now}&user=ann&event=click",
                      timeout=5).status_code == 204
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(proxy.url + "/docs")
    page.wait_for_selector(".opblock")
    assert answered_status(try_out_get_counts(page, now)) == "200"
    assert f"GET {PREFIX}/analytics?timestamp={now}" in proxy.requested
    assert proxy.outside() == []
    page.close()


def test_tracker_under_a_prefix(served: tuple[ShardstatsServer, PrefixProxy, Site],
                                browser: Browser) -> None:
    """A page includes ``https://site/stats/tracker.js``: its events go to
    ``/stats/analytics/batch``, not to the proxy's root."""
    server, proxy, site = served
    site.pages["/shop.html"] = (
        f'<!doctype html><html><head><script defer src="{proxy.url}/tracker.js"></script>'
        '</head><body><button id="buy" data-shardstats-click>Buy</button></body></html>')
    now = int(time.time() * 1000)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(site.origin + "/shop.html")
    page.click("#buy")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while hour_counts(server, now)["clicks"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hour_counts(server, now) == {"clicks": 1, "impressions": 1, "unique_users": 1}
    assert any(r.startswith(f"POST {PREFIX}/analytics/batch") for r in proxy.requested)
    assert proxy.outside() == []
    context.close()

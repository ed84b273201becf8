"""Headless Chromium for the browser tests, and tiny web sites to load pages from.

Debian's ``chromium`` (``.ci/run`` installs it), driven by Playwright through
``executable_path``: Playwright's own browser download is never used. Tests that need it are
skipped, with the reason, when it is missing.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Self

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed (apt-get install chromium)")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000  # any one wait in a page; a test takes a few seconds


@contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS,
                                    timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


class LocalServer:
    """An HTTP server on 127.0.0.1 (a port of its own) in a thread; ``handler`` serves it."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Site(LocalServer):
    """A web site on 127.0.0.1 (its own port: its own origin) serving fixed HTML pages."""

    def __init__(self, pages: Mapping[str, str]) -> None:
        self.pages = dict(pages)  # path -> HTML; may be filled in once the ports are known
        site = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                page = site.pages.get(self.path)
                body = (page or "not found").encode()
                self.send_response(200 if page is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


def try_out_get_counts(page: Page, timestamp: int) -> Locator:
    """In /docs (Swagger UI, rendered): "Try it out" on GET /analytics for ``timestamp``;
    returns the operation once its answer is shown."""
    get = page.locator("#operations-default-get_analytics")
    get.locator(".opblock-summary").click()
    get.locator(".try-out__btn").click()
    get.locator('tr[data-param-name="timestamp"] input').fill(str(timestamp))
    get.locator(".execute").click()
    get.locator(_ANSWERED_STATUS).wait_for()
    return get


def answered_status(operation: Locator) -> str:
    return operation.locator(_ANSWERED_STATUS).inner_text().strip()


_ANSWERED_STATUS = ".live-responses-table tbody .response-col_status"

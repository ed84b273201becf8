"""/docs in headless Chromium: Swagger UI renders every operation of /openapi.json from the
server's own files (nothing from another host), and "try it out" gets the server's answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from shardstats.http.openapi import DOCUMENT
from tests.e2e.browser import (
    TIMEOUT_MS,
    answered_status,
    chromium,
    needs_chromium,
    try_out_get_counts,
)
from tests.e2e.conftest import ServerFactory

pytestmark = [pytest.mark.e2e, needs_chromium]


def test_swagger_ui_renders_and_tries_requests_out(shardstats_server: ServerFactory,
                                                   data_dir: Path) -> None:
    # An allowlist that does not name the server: its own pages must still be served.
    server = shardstats_server.start(
        data_dir, {"SHARDSTATS_BROWSER_ORIGINS": "https://www.example.com"})
    now = int(time.time() * 1000)
    assert httpx.post(f"{server.url}/analytics?timestamp={now}&user=ann&event=click"
                      ).status_code == 204
    requested: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock")
        shown = page.eval_on_selector_all(
            ".opblock", "els => els.map(e => [e.querySelector('.opblock-summary-method')"
            ".innerText.toLowerCase(), e.querySelector('.opblock-summary-path')"
            ".getAttribute('data-path')])")
        documented = [[method, path] for path, ops in DOCUMENT["paths"].items()
                      for method in ops]
        assert sorted(shown) == sorted(documented)

        get = try_out_get_counts(page, now)
        assert answered_status(get) == "200"
        body = get.locator(".live-responses-table tbody .response-col_description pre").first
        expected = httpx.get(f"{server.url}/analytics?timestamp={now}").json()
        assert json.loads(body.inner_text()) == expected == {
            "clicks": 1, "impressions": 0, "unique_users": 1}

        # A POST from the page (same origin) is an ordinary POST: counted, no 403.
        post = page.locator("#operations-default-post_analytics")
        post.locator(".opblock-summary").click()
        post.locator(".try-out__btn").click()
        for name, value in (("timestamp", str(now)), ("user", "bea")):
            post.locator(f'tr[data-param-name="{name}"] input').fill(value)
        post.locator('tr[data-param-name="event"] select').select_option("impression")
        post.locator(".execute").click()
        status = post.locator(".live-responses-table tbody .response-col_status")
        status.wait_for()
        assert status.inner_text().strip() == "204"
    assert httpx.get(f"{server.url}/analytics?timestamp={now}").json() == {
        "clicks": 1, "impressions": 1, "unique_users": 2}
    # Offline: every file came from the server itself.
    assert requested and all(url.startswith(server.url + "/") for url in requested), requested

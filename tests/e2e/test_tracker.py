"""/tracker.js in headless Chromium, on pages of another origin, as a site would use it.

The page sites are tiny HTTP servers on 127.0.0.1 with ports of their own (other origins than
the shardstats server). The hour's counts are read back from the API and must match exactly.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.browser import TIMEOUT_MS, Site, chromium, needs_chromium
from tests.e2e.conftest import ServerFactory
from tools.spawn import ShardstatsServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e, needs_chromium]
TOKEN = "server-to-server-s3cret"
HOUR = 3_600_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (a launch takes seconds); each test has its own context,
    so its own localStorage."""
    with chromium() as launched:
        yield launched


NO_BEACON = ('<script>Object.defineProperty(Navigator.prototype, "sendBeacon", '
             '{value: undefined});</script>')


def tracked_page(stats: str, persist: bool = True, before: str = "") -> str:
    option = "" if persist else ' data-persist="false"'
    return f"""<!doctype html><html><head><meta charset=utf-8><title>shop</title>{before}
<script defer src="{stats}/tracker.js"{option}></script></head><body>
<a id="out" href="/next.html">next page</a>
<button id="buy" data-shardstats-click><span id="buy-label">Buy</span></button>
<button id="plain">not tracked</button>
</body></html>"""


def counts_since(server: ShardstatsServer, start_ms: int) -> dict[str, int]:
    """Totals from the hour of ``start_ms`` to now (a test may straddle an hour)."""
    now = int(time.time() * 1000)
    answer = httpx.get(f"{server.url}/analytics/range?from={start_ms}&to={now}", timeout=5)
    assert answer.status_code == 200, answer.text
    total: dict[str, int] = answer.json()["total"]
    return total


def requests(server: ShardstatsServer, method: str, status: int) -> int:
    """How many requests to /analytics/batch the server answered so (its metrics)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(rf'shardstats_request_seconds_count\{{method="{method}",'
                      rf'route="/analytics/batch",status="{status}"\}} (\d+)', text)
    return int(match.group(1)) if match else 0


def batch_posts(server: ShardstatsServer, status: int) -> int:
    return requests(server, "POST", status)


def wait_until(condition: Callable[[], bool], what: str, pump: Callable[[], None]) -> None:
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pump()


def test_page_views_and_clicks_are_counted_exactly(
        browser: Browser, shardstats_server: ServerFactory, data_dir: Path) -> None:
    with Site({"/next.html": "<!doctype html><p>no tracker here"}) as site:
        server = shardstats_server.start(data_dir, {
            "SHARDSTATS_BROWSER_ORIGINS": site.origin, "SHARDSTATS_INGEST_TOKEN": TOKEN})
        site.pages["/index.html"] = tracked_page(server.url)
        site.pages["/private.html"] = tracked_page(server.url, persist=False)
        site.pages["/old-browser.html"] = tracked_page(server.url, before=NO_BEACON)
        start_ms = int(time.time() * 1000)
        sent_bodies: list[str] = []  # what the page posted
        how: list[str] = []  # ping (sendBeacon) or fetch

        def on_request(request: Any) -> None:
            if request.url == f"{server.url}/analytics/batch" and request.method == "POST":
                sent_bodies.append(request.post_data)
                how.append(request.resource_type)

        with browser.new_context() as context:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", on_request)

            def sent(n: int) -> None:
                # Seen leaving the page, and answered 200 by the server (the page stops
                # watching a beacon's answer once it navigates; the browser still sends it).
                wait_until(lambda: len(sent_bodies) >= n and batch_posts(server, 200) >= n,
                           f"{n} beacons accepted", lambda: page.wait_for_timeout(20))

            page.goto(f"{site.origin}/index.html")
            sent(1)  # the page view
            page.click("#buy-label")  # inside the marked button: counts once
            sent(2)
            page.click("#plain")
            page.evaluate('shardstats.track("click")')
            sent(3)
            page.click("#out")
            page.wait_for_url(f"{site.origin}/next.html")
            sent(4)
            page.goto(f"{site.origin}/index.html")  # a second view by the same visitor
            sent(5)
            stored = page.evaluate("localStorage.getItem('shardstats_uid')")
            page.goto(f"{site.origin}/old-browser.html")  # no sendBeacon: fetch + keepalive
            sent(6)
            page.goto(f"{site.origin}/private.html")  # data-persist="false": a new id
            sent(7)
            page.wait_for_timeout(300)  # anything sent twice would be here by now
            assert page.evaluate("localStorage.getItem('shardstats_uid')") == stored
            # A page's own fetch with a non-safelisted type: preflighted, and the answer is
            # readable by the page (a line that counts nothing, so the totals stay as they are).
            answer = page.evaluate("""endpoint => fetch(endpoint, {method: "POST",
                    headers: {"Content-Type": "application/x-ndjson"}, body: "not json"})
                .then(r => r.json().then(body => ({status: r.status, body: body})))""",
                                   f"{server.url}/analytics/batch")
            assert answer["status"] == 200 and answer["body"]["rejected"] == 1
            assert requests(server, "OPTIONS", 204) == 1
        assert how == ["ping"] * 5 + ["fetch", "ping", "fetch"]  # the last: the page's own
        beacons = [json.loads(body) for body in sent_bodies[:7]]
        kinds = [body["event"] for body in beacons]
        assert kinds == ["impression", "click", "click", "click"] + ["impression"] * 3
        users = [body["user"] for body in beacons]
        assert users[:6] == [stored] * 6 and users[6] != stored
        assert len({body["id"] for body in beacons}) == 7

        expected = {"clicks": 3, "impressions": 4, "unique_users": 2}
        assert counts_since(server, start_ms) == expected
        assert batch_posts(server, 200) == 8

        # A beacon sent again (same event id) is acknowledged and counted once.
        line = json.dumps(beacons[1])
        again = httpx.post(f"{server.url}/analytics/batch", content=line,
                           headers={"Origin": site.origin, "Content-Type": "text/plain"})
        assert again.status_code == 200 and again.json()["accepted"] == 1
        assert counts_since(server, start_ms) == expected
        # Outside a browser the ingest token is still required.
        assert httpx.post(f"{server.url}/analytics/batch", content=line).status_code == 401


def test_a_page_of_an_unlisted_origin_is_refused(
        browser: Browser, shardstats_server: ServerFactory, data_dir: Path) -> None:
    with Site({}) as listed, Site({}) as foreign:
        server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": listed.origin})
        foreign.pages["/index.html"] = tracked_page(server.url)
        start_ms = int(time.time() * 1000)
        with browser.new_context() as context:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{foreign.origin}/index.html")
            page.wait_for_function("window.shardstats !== undefined")
            page.click("#buy-label")
            # Both beacons reached the server and were answered 403 (the page cannot see it).
            wait_until(lambda: batch_posts(server, 403) >= 2, "2 refused beacons",
                       lambda: page.wait_for_timeout(50))
        assert batch_posts(server, 403) == 2
        assert batch_posts(server, 200) == 0
        assert counts_since(server, start_ms) == {"clicks": 0, "impressions": 0,
                                                  "unique_users": 0}


def test_a_click_on_a_label_counts_once(
        browser: Browser, shardstats_server: ServerFactory, data_dir: Path) -> None:
    """Clicking a label also clicks its control (a second click event, from the browser):
    inside one tracked element that is still one click."""
    with Site({}) as site:
        server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": site.origin})
        site.pages["/form.html"] = f"""<!doctype html><html><head><meta charset=utf-8>
<script defer src="{server.url}/tracker.js"></script></head><body>
<div data-shardstats-click><label><input type="checkbox" id="agree">
<span id="agree-text">I agree</span></label></div>
<a href="#top"><label for="outside" id="link-label">in a link</label></a>
<input type="checkbox" id="outside">
<div data-shardstats-click><label><input type="checkbox" disabled>
<span id="off-text">disabled</span></label></div>
<fieldset disabled><div data-shardstats-click><label><input type="checkbox">
<span id="fieldset-text">in a disabled fieldset</span></label></div></fieldset>
</body></html>"""
        kinds: list[str] = []

        def on_request(request: Any) -> None:
            if request.url == f"{server.url}/analytics/batch" and request.method == "POST":
                kinds.append(json.loads(request.post_data)["event"])

        with browser.new_context() as context:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", on_request)
            page.goto(f"{site.origin}/form.html")
            page.wait_for_function("window.shardstats !== undefined")
            page.click("#agree-text")  # the label, then (from the browser) its checkbox
            assert page.is_checked("#agree")
            page.click("#agree")  # the checkbox itself
            # A label in a link for a control outside it: the link's click counts; the
            # control's click (outside anything tracked) does not.
            page.click("#link-label")
            assert page.is_checked("#outside")
            # A disabled control gets no click from its label: the label's click counts.
            page.click("#off-text", force=True)  # Playwright would wait for it
            page.click("#fieldset-text", force=True)
            wait_until(lambda: batch_posts(server, 200) >= 6, "6 beacons",
                       lambda: page.wait_for_timeout(20))
            page.wait_for_timeout(300)  # anything sent twice would be here by now
        assert kinds == ["impression"] + ["click"] * 5


def test_fetch_retries_an_event_the_batch_answer_says_failed(
        browser: Browser, shardstats_server: ServerFactory, data_dir: Path) -> None:
    """Without sendBeacon the answer is read: a line the server could not make durable
    (``failed``, in a 200: an overloaded or failing hour) is sent again, like a 5xx."""
    with Site({}) as site:
        server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": site.origin})
        site.pages["/old.html"] = tracked_page(server.url, before=NO_BEACON)
        start_ms = int(time.time() * 1000)
        bodies: list[str] = []
        failed = {"accepted": 0, "rejected": 0, "failed": 1,
                  "errors": [{"count": 1, "lines": "1", "verdict": "failed: storage error"}],
                  "results": ["failed: storage error"]}

        def first_fails(route: Any) -> None:
            bodies.append(route.request.post_data)
            if len(bodies) == 1:  # what the server answers when the hour's commit failed
                route.fulfill(status=200, content_type="application/json",
                              headers={"Access-Control-Allow-Origin": site.origin},
                              body=json.dumps(failed))
            else:
                route.continue_()

        with browser.new_context() as context:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.route(f"{server.url}/analytics/batch", first_fails)
            page.goto(f"{site.origin}/old.html")
            wait_until(lambda: batch_posts(server, 200) >= 1, "the retry",
                       lambda: page.wait_for_timeout(50))
            page.wait_for_timeout(300)
        assert len(bodies) == 2 and bodies[0] == bodies[1]  # the same event id
        assert counts_since(server, start_ms) == {"clicks": 0, "impressions": 1,
                                                  "unique_users": 1}


def test_a_pages_own_credentialed_beacon_with_json_is_taken(
        browser: Browser, shardstats_server: ServerFactory, data_dir: Path) -> None:
    """``sendBeacon`` with a JSON Blob is a credentialed CORS request (beacons always include
    credentials): its preflight must allow credentials, or the browser never sends the POST."""
    with Site({}) as site:
        server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": site.origin})
        site.pages["/own.html"] = "<!doctype html><p>no tracker, the page's own beacon"
        start_ms = int(time.time() * 1000)
        with browser.new_context() as context:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{site.origin}/own.html")
            queued = page.evaluate("""endpoint => navigator.sendBeacon(endpoint, new Blob(
                [JSON.stringify({timestamp: Date.now(), user: "own", event: "click", id: "j1"})],
                {type: "application/json"}))""", f"{server.url}/analytics/batch")
            assert queued is True
            wait_until(lambda: batch_posts(server, 200) >= 1, "the beacon's POST",
                       lambda: page.wait_for_timeout(50))
        assert requests(server, "OPTIONS", 204) == 1
        assert counts_since(server, start_ms) == {"clicks": 1, "impressions": 0,
                                                  "unique_users": 1}


def test_a_middle_click_on_a_link_counts(
        browser: Browser, shardstats_server: ServerFactory, data_dir: Path) -> None:
    """A middle click opens a link in a new tab: it fires ``auxclick``, not ``click``."""
    with Site({"/next.html": "<!doctype html><p>no tracker here"}) as site:
        server = shardstats_server.start(data_dir, {"SHARDSTATS_BROWSER_ORIGINS": site.origin})
        site.pages["/index.html"] = tracked_page(server.url)
        kinds: list[str] = []

        def on_request(request: Any) -> None:
            if request.url == f"{server.url}/analytics/batch" and request.method == "POST":
                kinds.append(json.loads(request.post_data)["event"])

        with browser.new_context() as context:
            context.on("request", on_request)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{site.origin}/index.html")
            page.wait_for_function("window.shardstats !== undefined")
            page.click("#out", button="middle")  # a link: counts
            page.click("#buy-label", button="middle")  # not a link: a middle click does nothing
            page.click("#buy-label", button="right")
            wait_until(lambda: batch_posts(server, 200) >= 2, "2 beacons",
                       lambda: page.wait_for_timeout(20))
            page.wait_for_timeout(300)
        assert kinds == ["impression", "click"]

"""The dashboard in headless Chromium: every number it shows (cards, table, hover values, CSV)
is the API's number; hour and day steps; the exact range uniques beside the sum of per-hour
uniques; the current hour refreshing by itself; usable on a phone-sized touch screen.

Needs Debian's ``chromium`` (``tests/e2e/browser.py``; skipped with the reason without it).
"""

from __future__ import annotations

import csv
import io
import random
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import chromium, needs_chromium
from tests.e2e.conftest import ServerFactory
from tools.spawn import ShardstatsServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOUR = 3_600_000

pytestmark = [pytest.mark.e2e, needs_chromium]

Page = Any  # playwright.sync_api.Page (imported lazily: the module skips without chromium)


@pytest.fixture(scope="module")
def launched() -> Iterator[Any]:
    """One Chromium for the module (a launch takes seconds)."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def browser(launched: Any) -> Iterator[Any]:
    """The module's Chromium; each page a test opens has a context of its own, closed at
    the end of the test (so no page of a test polls on into the next)."""
    yield launched
    for context in launched.contexts:
        context.close()


def seed(server: ShardstatsServer) -> tuple[int, int]:
    """Events over the last six days, most in the last two, users recurring across hours (so
    the sum of per-hour uniques exceeds the exact count), some in the current hour. Returns
    now (ms) and the start of its hour."""
    now = int(time.time() * 1000)
    rng = random.Random(5)
    lines = []
    for _ in range(600):
        age = rng.choice([0, 0, 0, 1, 2, 5, 30, 30, 60, 100, 140])
        ts = min(now, now - now % HOUR - age * HOUR + rng.randrange(HOUR))
        user = f"user-{rng.randrange(60)}"
        kind = rng.choice(["click", "impression"])
        lines.append(f'{{"timestamp": {ts}, "user": "{user}", "event": "{kind}"}}')
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/analytics/batch", content="\n".join(lines)).json()["accepted"] == 600
    return now, now - now % HOUR


def api_view(server: ShardstatsServer, first: int, last: int, step: str) -> dict[str, Any]:
    """What the page should show for a range: the API's series and total, and per row the sum
    of the hourly uniques of the hours it covers."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        hourly = client.get(f"/analytics/range?from={first}&to={last}&step=hour").json()
        shown = client.get(f"/analytics/range?from={first}&to={last}&step={step}").json()
    starts = [s["start"] for s in shown["series"]] + [shown["to"] + 1]
    rows = []
    for i, s in enumerate(shown["series"]):
        hourly_sum = sum(h["unique_users"] for h in hourly["series"]
                         if starts[i] <= h["start"] < starts[i + 1])
        rows.append({**s, "hourly_sum": hourly_sum})
    return {"rows": rows, "total": shown["total"],
            "hourly_sum": sum(h["unique_users"] for h in hourly["series"])}


def number(text: str) -> int:
    return int(text.replace(",", ""))


def shown(page: Page, element_id: str) -> int:
    return number(page.text_content(f"#{element_id}") or "")


def table(page: Page) -> list[dict[str, int]]:
    cells = page.eval_on_selector_all(
        "#table tbody tr",
        "rows => rows.map(r => [r.dataset.start, ...[...r.cells].map(c => c.textContent)])")
    return [{"start": int(start), "unique_users": number(users), "hourly_sum": number(hsum),
             "clicks": number(clicks), "impressions": number(impressions)}
            for start, _, users, hsum, clicks, impressions in cells]


def wait_reloaded(page: Page, before: str | None) -> None:
    page.wait_for_function(f"document.body.dataset.rangeLoaded !== '{before}'", timeout=15_000)


def check_matches(page: Page, expected: dict[str, Any]) -> None:
    rows = expected["rows"]
    assert table(page) == [{k: r[k] for k in ("start", "unique_users", "hourly_sum", "clicks",
                                              "impressions")} for r in rows]
    assert shown(page, "total-users") == expected["total"]["unique_users"]
    assert shown(page, "total-clicks") == expected["total"]["clicks"]
    assert shown(page, "total-impressions") == expected["total"]["impressions"]
    assert shown(page, "total-hourly-sum") == expected["hourly_sum"]
    for chart in ("users", "events"):
        assert page.get_attribute(f"#chart-{chart}", "data-points") == str(len(rows))
    # y axis: ticks from 0 up, evenly spaced, the top one at or above every value drawn
    for chart, keys in (("users", ["unique_users", "hourly_sum"]),
                        ("events", ["clicks", "impressions"])):
        ticks = [number(t) for t in page.eval_on_selector_all(
            f"#chart-{chart} text.ytick", "ts => ts.map(t => t.textContent)")]
        assert ticks[0] == 0 and len(ticks) >= 3
        assert len({b - a for a, b in pairwise(ticks)}) == 1
        assert ticks[-1] >= max(r[k] for r in rows for k in keys)


def hover(page: Page, chart: str, index: int, count: int) -> dict[str, int]:
    """Point at step ``index`` of a chart; the values its tooltip shows, by series."""
    for _ in range(100):  # None while a refresh redraws the chart
        box = page.locator(f"#chart-{chart} rect").bounding_box()
        if box is not None:
            break
    band = box["width"] / count
    page.mouse.move(box["x"] + band * (index + 0.5), box["y"] + box["height"] / 2)
    tip = page.locator(f"#tip-{chart}")
    tip.wait_for(state="visible", timeout=5_000)
    assert tip.get_attribute("data-index") == str(index)
    values = page.eval_on_selector_all(
        f"#tip-{chart} div[data-key]",
        "ds => ds.map(d => [d.dataset.key, d.querySelector('.v').textContent])")
    return {key: number(value) for key, value in values}


def download_csv(page: Page) -> list[dict[str, str]]:
    with page.expect_download(timeout=10_000) as download:
        page.click("#csv")
    text = Path(download.value.path()).read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def check_csv(page: Page, expected: dict[str, Any], step: str) -> None:
    records = download_csv(page)
    *rows, total = records
    assert [(int(r["start_ms"]), r["step"], int(r["unique_users"]), int(r["hourly_uniques_sum"]),
             int(r["clicks"]), int(r["impressions"])) for r in rows] == [
        (r["start"], step, r["unique_users"], r["hourly_sum"], r["clicks"], r["impressions"])
        for r in expected["rows"]]
    assert total["start_utc"] == "total"
    assert (int(total["unique_users"]), int(total["hourly_uniques_sum"]), int(total["clicks"]),
            int(total["impressions"])) == (
        expected["total"]["unique_users"], expected["hourly_sum"], expected["total"]["clicks"],
        expected["total"]["impressions"])


def test_dashboard_shows_the_api_numbers(shardstats_server: ServerFactory, data_dir: Path,
                                         browser: Any) -> None:
    server = shardstats_server.start(data_dir)
    now, hour = seed(server)
    page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    page.goto(server.url + "/?refresh=1", timeout=15_000)
    page.wait_for_selector("body[data-range-loaded][data-current-loaded]", timeout=15_000)
    assert page.text_content("#status") == ""

    # The default view: the last 48 hours, per hour.
    expected = api_view(server, hour - 47 * HOUR, hour + HOUR - 1, "hour")
    check_matches(page, expected)
    with httpx.Client(base_url=server.url) as client:
        current = client.get(f"/analytics?timestamp={now}").json()
    assert shown(page, "current-users") == current["unique_users"]
    assert shown(page, "current-clicks") == current["clicks"]
    assert shown(page, "current-impressions") == current["impressions"]

    # Hover shows each series' value of the step pointed at.
    rows = expected["rows"]
    busiest = max(range(len(rows)), key=lambda i: rows[i]["clicks"])
    for index in (0, busiest, len(rows) - 1):
        assert hover(page, "events", index, len(rows)) == {
            "clicks": rows[index]["clicks"], "impressions": rows[index]["impressions"]}
        assert hover(page, "users", index, len(rows)) == {
            "unique_users": rows[index]["unique_users"]}
    check_csv(page, expected, "hour")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Per day: the exact uniques of each day beside the sum of its hours' uniques.
    before = page.get_attribute("body", "data-range-loaded")
    page.click("button[data-hours='168']")
    wait_reloaded(page, before)
    day_start = now - now % (24 * HOUR)  # whole UTC days: today and the six before
    expected = api_view(server, day_start - 6 * 24 * HOUR, hour + HOUR - 1, "day")
    check_matches(page, expected)
    assert len(expected["rows"]) == 7
    assert any(r["hourly_sum"] > r["unique_users"] for r in expected["rows"])  # data as meant
    assert expected["hourly_sum"] > expected["total"]["unique_users"]
    day = max(range(len(expected["rows"])), key=lambda i: expected["rows"][i]["hourly_sum"])
    assert hover(page, "users", day, len(expected["rows"])) == {
        "unique_users": expected["rows"][day]["unique_users"],
        "hourly_sum": expected["rows"][day]["hourly_sum"]}
    check_csv(page, expected, "day")

    # A range typed in: the range endpoint's exact answer.
    first, last = hour - 30 * HOUR, hour - 2 * HOUR
    page.fill("#from", time.strftime("%Y-%m-%dT%H:00", time.gmtime(first / 1000)))
    page.fill("#to", time.strftime("%Y-%m-%dT%H:00", time.gmtime(last / 1000)))
    page.select_option("#step", "day")
    before = page.get_attribute("body", "data-range-loaded")
    page.click("#apply")
    wait_reloaded(page, before)
    check_matches(page, api_view(server, first, last + HOUR - 1, "day"))

    # The current hour refreshes by itself (every second with ?refresh=1), cards and chart.
    page.click("button[data-hours='24']")
    with httpx.Client(base_url=server.url) as client:
        for i in range(3):
            assert client.post(f"/analytics?timestamp={int(time.time() * 1000)}"
                               f"&user=late-{i}&event=click").status_code == 204
        current = client.get(f"/analytics?timestamp={int(time.time() * 1000)}").json()
    page.wait_for_function(
        "n => document.getElementById('current-clicks').textContent.replace(/,/g, '') == n",
        arg=str(current["clicks"]), timeout=10_000)
    page.wait_for_function(
        "n => [...document.querySelectorAll('#table tbody tr')].at(-1).cells[3].textContent"
        ".replace(/,/g, '') == n", arg=str(current["clicks"]), timeout=10_000)
    assert page.text_content("#status") == ""


def test_dashboard_on_a_phone(shardstats_server: ServerFactory, data_dir: Path,
                              browser: Any) -> None:
    server = shardstats_server.start(data_dir)
    _, hour = seed(server)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.goto(server.url + "/", timeout=15_000)
    page.wait_for_selector("body[data-range-loaded][data-current-loaded]", timeout=15_000)
    # Nothing wider than the screen: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for chart in ("users", "events"):
        assert page.locator(f"#chart-{chart}").bounding_box()["width"] <= 390
    # A tap shows the values, as a hover does.
    expected = api_view(server, hour - 47 * HOUR, hour + HOUR - 1, "hour")
    rows = expected["rows"]
    box = page.locator("#chart-events rect").bounding_box()
    index = len(rows) - 1
    page.locator("#chart-events rect").tap(
        position={"x": box["width"] / len(rows) * (index + 0.5), "y": box["height"] / 2})
    page.locator("#tip-events").wait_for(state="visible", timeout=5_000)
    assert page.get_attribute("#tip-events", "data-index") == str(index)
    assert number(page.text_content("#tip-events div[data-key='clicks'] .v") or "") == \
        rows[index]["clicks"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    context.close()


def test_dashboard_with_a_query_token(shardstats_server: ServerFactory, data_dir: Path,
                                      browser: Any) -> None:
    server = shardstats_server.start(data_dir, {"SHARDSTATS_QUERY_TOKEN": "s3cret"})
    _, hour = seed(server)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto(server.url + "/", timeout=15_000)
    page.wait_for_function("document.getElementById('status').textContent.includes('token')",
                           timeout=15_000)
    page.fill("#token", "s3cret")
    page.press("#token", "Tab")  # a change event: kept, and the data fetched again
    page.wait_for_selector("body[data-range-loaded][data-current-loaded]", timeout=15_000)
    headers = {"Authorization": "Bearer s3cret"}
    first, last = hour - 47 * HOUR, hour + HOUR - 1
    with httpx.Client(base_url=server.url, headers=headers) as client:
        total = client.get(f"/analytics/range?from={first}&to={last}").json()["total"]
    assert shown(page, "total-users") == total["unique_users"]
    assert page.text_content("#status") == ""
    assert page.evaluate("localStorage.getItem('shardstats-token')") == "s3cret"

"""Screenshots of the dashboard for the README, from a server with a week of demo traffic.

    python -m tools.dashboard_screenshot [--out tools/screenshots]

Starts ``shardstats serve`` on a temporary data directory, sends a week of events with a
daily rhythm through ``shardstats.client`` (recurring users, so the exact weekly uniques are
far below the sum of hourly ones), then opens the dashboard in Debian's headless ``chromium``
(driven by Playwright, as the browser tests do), shows 7 days per day with the values of one
day pointed at, and writes ``dashboard.png`` (desktop) and ``dashboard-phone.png`` (390 px).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import tempfile
import time
from pathlib import Path

from shardstats.client import Client, Event, make_event
from tools.spawn import ShardstatsServer

HOUR = 3_600_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run"]


def demo_events(now: int, rng: random.Random) -> list[Event]:
    """A week of traffic: busier in the (UTC) afternoon, a pool of returning users."""
    events = []
    first = now - now % HOUR - 167 * HOUR
    for hour in range(168):
        start = first + hour * HOUR
        daily = 0.5 + 0.5 * math.sin((((start // HOUR) % 24) - 9) / 24 * 2 * math.pi)
        for _ in range(int(20 + 160 * daily * rng.uniform(0.7, 1.2))):
            user = f"visitor-{int(rng.paretovariate(1.2) * 40) % 3000}"
            kind = "click" if rng.random() < 0.3 else "impression"
            events.append(make_event(user, kind, min(now, start + rng.randrange(HOUR))))
    return events


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url, timeout=20_000)
            page.wait_for_selector("body[data-range-loaded][data-current-loaded]")
            before = page.get_attribute("body", "data-range-loaded")
            page.click("button[data-hours='168']")
            page.wait_for_function(f"document.body.dataset.rangeLoaded !== '{before}'")
            box = page.locator("#chart-users rect").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] * 4.5 / 7, box["y"] + box["height"] / 2)
            page.locator("#tip-users").wait_for(state="visible", timeout=5_000)
            page.screenshot(path=str(out / "dashboard.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844},
                                     device_scale_factor=1, is_mobile=True, has_touch=True)
            phone.goto(url, timeout=20_000)
            phone.wait_for_selector("body[data-range-loaded][data-current-loaded]")
            phone.screenshot(path=str(out / "dashboard-phone.png"), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            ShardstatsServer(Path(tmp) / "data", Path(tmp) / "server.log") as server:
        events = demo_events(int(time.time() * 1000), random.Random(7))
        with Client(server.url) as client:
            for i in range(0, len(events), 5000):
                assert client.send_batch(events[i:i + 5000]) == []
        shoot(server.url + "/", args.out)
    print(f"{len(events)} events; wrote {args.out}/dashboard.png and dashboard-phone.png")


if __name__ == "__main__":
    main()

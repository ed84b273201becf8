"""The dashboard in headless Chromium: the numbers it shows are the API's numbers.

Needs Debian's ``chromium`` (``.ci/run`` installs it); Playwright drives it through
``executable_path`` (Playwright's own browser download is never used).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerFactory

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOUR = 3_600_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]


def test_dashboard_shows_the_api_numbers(shardstats_server: ServerFactory, data_dir: Path
                                         ) -> None:
    from playwright.sync_api import sync_playwright

    server = shardstats_server.start(data_dir)
    now = int(time.time() * 1000)
    rng = random.Random(5)
    lines = []
    for _ in range(400):
        age = rng.choice([0, 0, 0, 1, 2, 5, 30])
        ts = max(now - age * HOUR - rng.randrange(HOUR), now - 47 * HOUR - now % HOUR)
        user = f"user-{rng.randrange(60)}"
        kind = rng.choice(["click", "impression"])
        lines.append(f'{{"timestamp": {min(ts, now)}, "user": "{user}", "event": "{kind}"}}')
    with httpx.Client(base_url=server.url, timeout=10) as client:
        report = client.post("/analytics/batch", content="\n".join(lines)).json()
        assert report["accepted"] == 400
        start = now - now % HOUR - 47 * HOUR
        expected = client.get(f"/analytics/range?from={start}&to={now}&step=hour").json()
        current = client.get(f"/analytics?timestamp={now}").json()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(server.url + "/", timeout=15_000)
            page.wait_for_selector("body[data-range-loaded][data-current-loaded]",
                                   timeout=15_000)

            def shown(element_id: str) -> int:
                return int(page.inner_text(f"#{element_id}").replace(",", ""))

            assert shown("total-users") == expected["total"]["unique_users"]
            assert shown("total-clicks") == expected["total"]["clicks"]
            assert shown("total-impressions") == expected["total"]["impressions"]
            assert shown("current-users") == current["unique_users"]
            assert shown("current-clicks") == current["clicks"]
            assert shown("current-impressions") == current["impressions"]
            assert page.get_attribute("#chart", "data-points") == "48"
            assert page.inner_text("#status") == ""
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The range picker asks the range endpoint and shows its exact union.
            page.fill("#from", time.strftime("%Y-%m-%dT%H:00", time.gmtime(start / 1000)))
            page.fill("#to", time.strftime("%Y-%m-%dT%H:00", time.gmtime(now / 1000)))
            page.select_option("#step", "day")
            before = page.get_attribute("body", "data-range-loaded")
            page.click("#apply")
            page.wait_for_function(
                f"document.body.dataset.rangeLoaded !== '{before}'", timeout=15_000
            )
            assert shown("total-users") == expected["total"]["unique_users"]
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

"""``GET /analytics/range`` through the app: exact unions in the documented shape, and bounds
that stay valid timestamps."""

from __future__ import annotations

from pathlib import Path

from shardstats.config import Settings
from shardstats.core.events import HOUR_MS
from tests.http.apps import ready_client

MAX = 2**63 - 1
DAY = 20_000  # a UTC day: hours 480_000 .. 480_023
NOW = (DAY * 24 + 30) * HOUR_MS  # 6 hours into the next day


async def test_totals_are_unions_and_the_series_follows_the_step(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    first = DAY * 24 + 22  # the last two hours of the day, then the first of the next
    sent = [(first, "ann", "click"), (first, "bob", "impression"), (first + 1, "ann", "click"),
            (first + 2, "ann", "impression"), (first + 2, "cy", "click")]
    async with ready_client(settings, NOW) as client:
        for hour, user, event in sent:
            query = f"timestamp={hour * HOUR_MS + 1}&user={user}&event={event}"
            assert (await client.post(f"/analytics?{query}")).status_code == 204
        span = f"from={first * HOUR_MS}&to={(first + 3) * HOUR_MS - 1}"
        by_hour = await (await client.get(f"/analytics/range?{span}")).get_json()
        by_day = await (await client.get(f"/analytics/range?{span}&step=day")).get_json()
    total = {"unique_users": 3, "clicks": 3, "impressions": 2}  # ann counts once
    assert by_hour["total"] == by_day["total"] == total
    assert (by_hour["from"], by_hour["to"]) == (first * HOUR_MS, (first + 3) * HOUR_MS - 1)
    assert [(s["start"], s["unique_users"], s["clicks"], s["impressions"])
            for s in by_hour["series"]] == [(first * HOUR_MS, 2, 1, 1),
                                            ((first + 1) * HOUR_MS, 1, 1, 0),
                                            ((first + 2) * HOUR_MS, 2, 1, 1)]
    assert [(s["start"], s["unique_users"], s["clicks"], s["impressions"])
            for s in by_day["series"]] == [(first * HOUR_MS, 2, 2, 1),
                                           ((first + 2) * HOUR_MS, 2, 1, 1)]


async def test_range_end_never_exceeds_the_largest_timestamp(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with ready_client(settings) as client:
        response = await client.get(f"/analytics/range?from={MAX}&to={MAX}")
        assert response.status_code == 200
        body = await response.get_json()
        assert body["to"] == MAX and body["from"] <= MAX

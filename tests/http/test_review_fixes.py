"""Regressions from the black-box review."""

from __future__ import annotations

from pathlib import Path

from shardstats.config import Settings
from tests.http.apps import ready_client

MAX = 2**63 - 1


async def test_range_end_never_exceeds_the_largest_timestamp(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with ready_client(settings) as client:
        response = await client.get(f"/analytics/range?from={MAX}&to={MAX}")
        assert response.status_code == 200
        body = await response.get_json()
        assert body["to"] == MAX and body["from"] <= MAX

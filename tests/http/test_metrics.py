"""GET /metrics: Prometheus text with the counters, histograms and gauges the issue names."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shardstats.config import Settings
from shardstats.http.metrics import reason_label
from tests.http.apps import ready_client

NOW = 1_780_000_000_000


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_follow_traffic(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with ready_client(settings, NOW) as client:
        for user in ("a", "b", "c"):
            await client.post(f"/analytics?timestamp={NOW}&user={user}&event=click")
        await client.post("/analytics?timestamp=soon&user=a&event=click")
        await client.post(f"/analytics?timestamp={NOW}&user=a&event=tap")
        await client.post(
            "/analytics/batch",
            data=f'{{"timestamp": {NOW}, "user": "d", "event": "impression"}}\nnope',
        )
        await client.get(f"/analytics?timestamp={NOW}")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        got = samples(await response.get_data(as_text=True))
    assert got[("shardstats_events_accepted_total", ())] == 4
    assert got[("shardstats_events_rejected_total", (("reason", "timestamp"),))] == 1
    assert got[("shardstats_events_rejected_total", (("reason", "event"),))] == 1
    assert got[("shardstats_events_rejected_total", (("reason", "json"),))] == 1
    assert got[("shardstats_commit_batch_events_sum", ())] == 4
    assert got[("shardstats_commit_seconds_count", ())] >= 1
    assert got[("shardstats_open_shards", ())] == 1
    assert got[("shardstats_queued_requests", ())] == 0
    assert got[("shardstats_ready", ())] == 1
    key = (
        "shardstats_request_seconds_count",
        (("method", "POST"), ("route", "/analytics"), ("status", "204")),
    )
    assert got[key] == 3


def test_reason_labels_are_bounded() -> None:
    assert reason_label("timestamp is more than 600 s in the future") == "window"
    assert reason_label("parameter 'user' given more than once") == "duplicate"
    assert reason_label("user is 300 bytes long; the maximum is 256") == "user"
    assert reason_label("something new") == "other"

"""Cluster mode over HTTP, with the in-memory log behind the node: the app publishes POSTs,
wait at the read barrier on GETs, say when an answer is stale, and report lag in /healthz
and /metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import trio

from shardstats.clock import FixedClock
from shardstats.cluster.log import EventLog
from shardstats.cluster.memory import InMemoryLog
from shardstats.config import Settings
from shardstats.core import stream
from shardstats.core.events import EventColumns, EventKind
from shardstats.shards.service import Service
from tests.cluster.test_materializer import Shared
from tests.http.conftest import NOW_MS, running_app


def cluster_service(log: InMemoryLog) -> Callable[[Settings, FixedClock], Service]:
    def make(settings: Settings, clock: FixedClock) -> Service:
        async def factory() -> EventLog:
            return Shared(log)

        return Service(settings, clock=clock, log_factory=factory)

    return make


async def test_posts_are_published_and_gets_read_their_writes(tmp_path: Path) -> None:
    log = InMemoryLog()
    async with running_app(tmp_path / "d", service_factory=cluster_service(log),
                           node_name="n1") as h:
        await h.event(NOW_MS, "alice", "click")
        assert len(log.stored()) == 1
        # Another node's event, straight into the log: this node's next GET must count it.
        other = EventColumns([NOW_MS], ["bob"], [int(EventKind.IMPRESSION)])
        await log.publish(stream.encode(other), "n2:x:1")
        response = await h.get(f"timestamp={NOW_MS}")
        assert response.status_code == 200
        assert "shardstats-consistency" not in response.headers
        assert json.loads(await response.get_data()) == {
            "unique_users": 2, "clicks": 1, "impressions": 1}

        log.set_available(False)  # lost quorum: POSTs 503, GETs answer from this node, flagged
        response = await h.post(f"timestamp={NOW_MS}&user=carol&event=click")
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
        with trio.fail_after(10):
            response = await h.get(f"timestamp={NOW_MS}")
        assert response.status_code == 200
        assert response.headers["shardstats-consistency"] == "stale"
        ranged = await h.request("GET", f"from={NOW_MS}&to={NOW_MS}", "/analytics/range")
        assert ranged.status_code == 200
        assert ranged.headers["shardstats-consistency"] == "stale"
        log.set_available(True)
        await h.event(NOW_MS, "carol", "click")
        assert await h.counts(NOW_MS) == {"unique_users": 3, "clicks": 2, "impressions": 1}


async def test_healthz_and_metrics_show_the_node_and_its_lag(tmp_path: Path) -> None:
    log = InMemoryLog()
    async with running_app(tmp_path / "d", service_factory=cluster_service(log),
                           node_name="n1") as h:
        await h.event(NOW_MS, "alice", "click")
        await h.counts(NOW_MS)
        health = await h.client.get("/healthz")
        assert health.status_code == 200
        body = await health.get_json()
        assert body["status"] == "ready" and body["node"] == "n1"
        assert body["applied_seq"] == 1 and body["lag_records"] == 0
        text = (await (await h.client.get("/metrics")).get_data()).decode()
        assert "shardstats_log_applied_seq 1.0" in text
        assert "shardstats_publish_records_total 1.0" in text
        assert "shardstats_log_lag_records 0.0" in text


async def test_a_batch_is_published_and_counted(tmp_path: Path) -> None:
    log = InMemoryLog()
    async with running_app(tmp_path / "d", service_factory=cluster_service(log),
                           node_name="n1") as h:
        lines = [json.dumps({"timestamp": NOW_MS - i, "user": f"u{i}", "event": "impression",
                             "id": f"e{i}"}) for i in range(50)]
        for _ in range(2):  # a retry of the same ids, published again, counts once
            response = await h.request("POST", "", "/analytics/batch",
                                       body="\n".join(lines).encode())
            assert response.status_code == 200, await response.get_data()
        assert await h.counts(NOW_MS) == {"unique_users": 50, "clicks": 0, "impressions": 50}
        assert len(log.stored()) == 2

"""Cluster mode with deferred snapshots (a review of issue 14): every node materializes many
hours through two open shards and caches none, so closed hours live in memory as unsaved
aggregates while the stream is applied; a node killed with SIGKILL comes back on its data
directory (journals with their stream seqs, snapshots written or not) and agrees exactly.

12 hours (6x the open shards), written alike, and 300-500 acks before the kill, 300 after:
the materializers still close a shard for most events and hold unsaved aggregates of closed
hours before and after the kill. (It was 40 hours and 600-1,000 + 600 acks; the nodes then
spent ~30 s catching up, through the same mechanism; ``SHARDSTATS_TEST_LONG=1`` runs that.)"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from tests.e2e.test_cluster import (
    Cluster,
    Load,
    agreed_answers,
    run_load,
    running_cluster,
    wait_acks,
)
from tests.e2e.test_server import Workload, now_ms, recent_hours
from tools.loadgen.ledger import Ledger

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory

LONG = os.environ.get("SHARDSTATS_TEST_LONG") == "1"  # README "Development"
pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


@pytest.fixture
async def tight_cluster(shardstats_server: ServerFactory, tmp_path: Path
                        ) -> AsyncIterator[Cluster]:
    async with running_cluster(shardstats_server, tmp_path, {
            "SHARDSTATS_MAX_OPEN_SHARDS": "2", "SHARDSTATS_MAX_CACHED_HOURS": "0"}) as running:
        yield running


@pytest.mark.timeout(300)
async def test_sigkill_a_node_with_unsaved_hours_and_it_catches_up_exactly(
    tight_cluster: Cluster,
) -> None:
    cluster = tight_cluster
    rng = random.Random(14)
    now = now_ms()
    hours = recent_hours(now, list(range(1, 40 if LONG else 12)))
    ledger = Ledger()
    urls = [node.url for node in cluster.nodes]
    workload = Workload(rng, hours, now, "d")
    workload.weights = [1] * len(hours)  # every hour alike: shards close all the time
    load = Load(urls, workload, ledger, rng)
    async with trio.open_nursery() as nursery:
        running = await run_load(load, nursery)
        if LONG:
            await wait_acks(load, rng.randint(600, 1000), rng.randint(50, 150), within=60)
        else:
            await wait_acks(load, rng.randint(300, 500), rng.randint(30, 80), within=60)
        load.down.add(urls[2])
        load.failing = True
        cluster.nodes[2].kill()
        more = 2 if LONG else 1
        await wait_acks(load, load.acks + 300 * more, load.single_acks + 50 * more, within=60)
        running.stop.set()
    survivors = urls[:2]
    before = await agreed_answers(survivors, ledger)
    restarted = await cluster.nodes[2].astart(within=150)
    after = await agreed_answers([*survivors, restarted.url], ledger)
    assert after == before

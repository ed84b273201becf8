"""SIGKILL while every hour of the 30-day window is written through a few open shards (issue 14's
deferred snapshots, from outside): closed hours exist only in memory, the background writer
and cold loads race, proven snapshots are written and then trusted after another SIGKILL.
Whatever was acknowledged is counted; nothing is invented; answers survive every restart."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from tests.e2e.test_server import (
    Workload,
    answers,
    assert_bounds,
    journal_hours,
    load_then_signal,
    now_ms,
    recent_hours,
)
from tools.loadgen.ledger import Ledger

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"SHARDSTATS_MAX_OPEN_SHARDS": "4", "SHARDSTATS_MAX_CACHED_HOURS": "0"},
                     id="nothing-cached"),
    ],
)
async def test_sigkill_while_flooding_every_hour_keeps_acked_and_invents_nothing(
    shardstats_server: ServerFactory, data_dir: Path, env: dict[str, str]
) -> None:
    rng = random.Random(720)
    now = now_ms()
    hours = recent_hours(now, list(range(1, 30 * 24)))
    ledger = Ledger()
    for cycle in range(3):
        server = await shardstats_server.astart(data_dir, env)
        workload = Workload(rng, hours, now, tag=f"c{cycle}")
        workload.weights = [1] * len(hours)  # every hour alike: nothing stays open
        await load_then_signal(server, workload, ledger, rng, signal.SIGKILL)
        assert await server.await_exit(10) == -signal.SIGKILL
    written = sorted(ledger.hours)
    assert len(written) > 300, len(written)
    assert journal_hours(data_dir) <= set(written)

    # Cold loads of every hour (each queues a snapshot), then the proofs settle and are
    # written; a SIGKILL after that leaves proven snapshots the next start trusts.
    server = await shardstats_server.astart(data_dir, env)
    first = await answers(server.url, written)
    assert_bounds(first, ledger, "after the kills:\n")
    await trio.sleep(4.5)  # past SETTLE_NS: the writer now records proofs
    assert await answers(server.url, written) == first
    await trio.sleep(2)
    server.kill()
    await server.await_exit(10)
    server = await shardstats_server.astart(data_dir, env)
    assert await answers(server.url, written) == first
    server.terminate()
    assert await server.await_exit(30) == 0, server.log()
    server = await shardstats_server.astart(data_dir, env)
    assert await answers(server.url, written) == first

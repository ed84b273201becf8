"""SIGKILL while every hour of the 30-day window is written through a few open shards (issue 14's
deferred snapshots, from outside): closed hours exist only in memory, the background writer
and cold loads race, proven snapshots are written and then trusted after another SIGKILL.
Whatever was acknowledged is counted; nothing is invented; answers survive every restart.

Every third hour of the window (240 hours, from the current one back to 30 days less two
hours) rather than all 720: 60 times more hours than open shards still closes a shard on
nearly every POST and leaves hundreds of closed hours unsaved, while each round of answers
(two GETs per hour, each a cold load with nothing cached) costs a third. The waits for the
proofs poll the files (journal ctimes past ``SETTLE_NS``, then a proven snapshot of every
hour) instead of sleeping a fixed time. ``SHARDSTATS_TEST_LONG=1`` writes every hour, as
before."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shardstats.core import snapshot as snapshot_codec
from shardstats.errors import CorruptFile
from tests.e2e.test_server import (
    Workload,
    answers,
    assert_bounds,
    journal_hours,
    load_then_signal,
    now_ms,
    poll_until,
    recent_hours,
)
from tools.loadgen.ledger import Ledger

LONG = os.environ.get("SHARDSTATS_TEST_LONG") == "1"  # README "Development"

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory


def journals_settled(data_dir: Path) -> bool:
    """Every journal's ctime lies past ``SETTLE_NS`` (a snapshot written now may carry a
    proof), by the test the writer makes: the clock read before the stat."""
    now = time.time_ns()
    return all(os.stat(path).st_ctime_ns < now - snapshot_codec.SETTLE_NS
               for path in (data_dir / "journals").glob("*.sqlite"))


def proven_hours(data_dir: Path) -> set[int]:
    """Hours whose snapshot carries a proof of its journal's state."""
    proven = set()
    for path in (data_dir / "snapshots").glob("*.snap"):
        try:
            snapshot = snapshot_codec.decode(path.read_bytes())
        except (OSError, CorruptFile):
            continue  # being replaced right now
        if snapshot.proof is not None:
            proven.add(int(path.name.removesuffix(".snap")))
    return proven


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
    hours = recent_hours(now, list(range(1, 30 * 24, 1 if LONG else 3)))
    ledger = Ledger()
    for cycle in range(3):
        server = await shardstats_server.astart(data_dir, env)
        workload = Workload(rng, hours, now, tag=f"c{cycle}")
        workload.weights = [1] * len(hours)  # every hour alike: nothing stays open
        await load_then_signal(server, workload, ledger, rng, signal.SIGKILL)
        assert await server.await_exit(10) == -signal.SIGKILL
    written = sorted(ledger.hours)
    assert len(written) > len(hours) // 2, len(written)
    assert journal_hours(data_dir) <= set(written)

    # Cold loads of every hour (each queues a snapshot), then the proofs settle and are
    # written; a SIGKILL after that leaves proven snapshots the next start trusts.
    server = await shardstats_server.astart(data_dir, env)
    first = await answers(server.url, written)
    assert_bounds(first, ledger, "after the kills:\n")
    await poll_until(lambda: journals_settled(data_dir), 10, "journal ctimes past SETTLE_NS")
    # The writer now records proofs: these loads queue a proven snapshot of every hour.
    assert await answers(server.url, written) == first
    journals = journal_hours(data_dir)
    await poll_until(lambda: proven_hours(data_dir) >= journals, 30,
                     "a proven snapshot of every hour")
    server.kill()
    await server.await_exit(10)
    server = await shardstats_server.astart(data_dir, env)
    assert await answers(server.url, written) == first
    server.terminate()
    assert await server.await_exit(30) == 0, server.log()
    server = await shardstats_server.astart(data_dir, env)
    assert await answers(server.url, written) == first

"""SIGKILL during batch ingest of mostly new users, with a tiny dictionary tail and cache, so
ids are born in nearly every commit, lookups go through the name index's runs, and upkeep
(tail written out, runs merged) runs beside the commits when the kill lands. After each
restart every hour's counts, unique users included, satisfy acknowledged <= counted <= sent,
and ``shardstats verify`` finds the journals and the dictionary consistent at the end.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from tests.e2e.test_batch_kill import batches_then_kill
from tests.e2e.test_server import Workload, kill_and_restart, now_ms, recent_hours
from tools.loadgen.ledger import Ledger

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory
    from tools.spawn import ShardstatsServer

# Odd but valid names: quotes, backslashes, non-ASCII (the JSON insert of new names).
ODD = ['q"', "b\\s", "é", "😀", "\u2028", "x y"]


class NewUsers(Workload):
    def user(self) -> str:
        if self.rng.random() < 0.9:
            fresh = f"new-{self.tag}-{self.rng.randrange(10**9)}"
            return fresh + self.rng.choice(ODD) if self.rng.random() < 0.2 else fresh
        return self.rng.choice(self.regulars)


@pytest.mark.e2e
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_sigkill_during_ingest_of_mostly_new_users_keeps_exact_counts(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    rng = random.Random(23)
    now = now_ms()
    hours = recent_hours(now, [1, 24])
    ledger = Ledger()
    env = {"SHARDSTATS_USER_INDEX_TAIL": "64", "SHARDSTATS_USER_CACHE_SIZE": "100"}

    async def load(server: ShardstatsServer, tag: str) -> None:
        await batches_then_kill(server, NewUsers(rng, hours, now, tag=tag), ledger, rng, tag=tag)

    server, _ = await kill_and_restart(shardstats_server, data_dir, env, ledger, 2, load)
    assert ledger.acknowledged >= 2 * 2_000
    assert any((data_dir / "users-index").glob("*.run")), "no run was written"
    server.terminate()
    assert await server.await_exit(25) == 0, server.log()
    with trio.fail_after(120):
        verify = await trio.run_process(
            [sys.executable, "-m", "shardstats", "verify", "--data-dir", str(data_dir)],
            capture_stdout=True, capture_stderr=True, check=False)
    assert verify.returncode == 0, (verify.stdout[-3000:] + verify.stderr[-3000:]).decode()

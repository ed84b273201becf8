"""SIGKILL while snapshots are deferred (registry rules 8 and 9): closed hours whose aggregate
exists only in memory, snapshots being written in the background, proven snapshots whose
journal then grows. Whatever was acknowledged is counted after the restart; nothing is
invented."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_server import kill_cycles

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory


@pytest.mark.e2e
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "env",
    [
        # Seven hours through two open shards: every other POST closes an hour, whose
        # aggregate stays cached and unsaved (killed before its snapshot is due).
        pytest.param({"SHARDSTATS_MAX_OPEN_SHARDS": "2"}, id="closed-hours-unsaved"),
        # Nothing cached: each closed hour's snapshot is written in the background at once,
        # so kills land before, during and after those writes.
        pytest.param({"SHARDSTATS_MAX_OPEN_SHARDS": "2", "SHARDSTATS_MAX_CACHED_HOURS": "0"},
                     id="background-writes"),
    ],
)
async def test_sigkill_with_deferred_snapshots_keeps_acked_and_invents_nothing(
    shardstats_server: ServerFactory, data_dir: Path, env: dict[str, str]
) -> None:
    ledger, _ = await kill_cycles(shardstats_server, data_dir, env, cycles=3, seed=14)
    assert ledger.acknowledged >= 3 * 150

"""Short variant of ``tools/soak.py``: a few SIGKILL/restart cycles under concurrent load,
with small bounds so kills land during snapshots, evictions and reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.soak import soak

pytestmark = pytest.mark.e2e


def test_kill_restart_cycles_lose_nothing(tmp_path: Path) -> None:
    report = soak(tmp_path / "data", cycles=4, clients=8, seed=11, kill_after=(0.5, 1.5),
                  log_path=tmp_path / "server.log", quiet=True)
    assert report.problems == []
    assert report.lost == 0 and report.invented == 0
    assert report.acked_events > 100, "the load never got going; the check would be vacuous"

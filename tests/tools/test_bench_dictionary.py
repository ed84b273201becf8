"""The dictionary benchmark's short variant: it fills, times and reports what it measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shardstats.storage.users import UserStore
from tools import bench_dictionary


def test_short_run_reports_each_size_and_fills_the_dictionary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_dictionary.main(["--sizes", "0,3000", "--new", "200", "--rounds", "2",
                                  "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("dictionary of 0 names: assign of 200 new names: median ")
    assert re.search(r"\d+\.\d\d us per new name; file \d+ MiB$", out[1])
    store = UserStore(tmp_path / "users.sqlite", readonly=True)
    try:  # 0 + 2 x 200, then filled to 3,000, then 2 x 200 more
        assert len(list(store.names(range(1, 5000)))) == 3000 + 2 * 200
    finally:
        store.close()


@pytest.mark.parametrize("argv", [["--sizes", "3,2"], ["--sizes", "x"], ["--new", "0"]])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_dictionary.main(argv)
    assert exit_info.value.code == 2

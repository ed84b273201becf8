"""The dictionary benchmark's short variant: it fills, times and reports what it measured."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from tools import bench_dictionary


def test_short_run_reports_each_size_and_fills_the_dictionary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_dictionary.main(["--sizes", "0,3000", "--new", "200", "--rounds", "2",
                                  "--known", "50", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    us = r"\d+\.\d\d us \(CPU \d+\.\d\d us\)"
    assert re.fullmatch(rf"dictionary of 0 names: new name {us} \(assign of 200: median \d+ ms, "
                        rf"slowest \d+ ms\) \+ index upkeep {us}; RSS \d+ MiB \(anon \d+, "
                        r"file \d+\); on disk \d+ MiB", out[0])
    assert re.search(rf"^dictionary of 3,000 names: .* known name \(not cached\) {us}; ", out[1])
    conn = sqlite3.connect(tmp_path / "users.sqlite")
    try:  # 0 + 2 x 200, then filled to 3,000, then 2 x 200 more
        assert conn.execute("SELECT count(*), count(DISTINCT name), max(id) FROM users"
                            ).fetchone() == (3000 + 2 * 200,) * 3
        known = conn.execute("SELECT count(*) FROM users WHERE name LIKE 'known-%'").fetchone()
        assert known == (3000 - 2 * 200,)
    finally:
        conn.close()


@pytest.mark.parametrize("argv", [["--sizes", "3,2"], ["--sizes", "x"], ["--new", "0"],
                                  ["--known", "0"]])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_dictionary.main(argv)
    assert exit_info.value.code == 2

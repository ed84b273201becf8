"""A journal left without tables (a crash between creating the file and its schema, by an
earlier build) is an empty hour to a GET, which must not write it; a POST may."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.journals import BLANK_KINDS, write_blank_journal

from .conftest import NOW_MS, K, running_app

ZERO = {"unique_users": 0, "clicks": 0, "impressions": 0}


def tables(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
    finally:
        conn.close()


@pytest.mark.parametrize("hour", [K, K - 1], ids=["current", "past"])
@pytest.mark.parametrize("kind", BLANK_KINDS)
async def test_a_get_reads_a_journal_without_tables_as_empty_and_writes_nothing(
    tmp_path: Path, kind: str, hour: int
) -> None:
    data = tmp_path / "data"
    (data / "journals").mkdir(parents=True)
    path = data / "journals" / f"{hour}.sqlite"
    write_blank_journal(path, kind)
    before = path.read_bytes()
    timestamp = hour * 3_600_000 + 1_000
    async with running_app(data, now_ms=NOW_MS) as harness:
        assert await harness.counts(timestamp) == ZERO
        assert path.read_bytes() == before and tables(path) == []
        await harness.event(timestamp, "alice")  # a POST may write: it creates the tables
        assert await harness.counts(timestamp) == {**ZERO, "unique_users": 1, "clicks": 1}

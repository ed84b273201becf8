"""Format 1 (one row per event): read as it is, upgraded in place on the first write with
seqs kept, damage reported as corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from shardstats.core.aggregate import HourAggregate
from shardstats.errors import CorruptFile
from shardstats.ops.compact import compact_hour
from shardstats.shards import loader
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal
from tests.storage.journals import HOUR, OLD_ROWS, T0, columns, make_format_1


@pytest.mark.parametrize("with_eid", [True, False])
def test_format_1_is_read_as_is_and_upgraded_on_write_with_seqs_kept(
    tmp_path: Path, with_eid: bool
) -> None:
    path = tmp_path / f"{HOUR}.sqlite"
    make_format_1(path, OLD_ROWS, with_eid=with_eid)
    readonly = Journal(path, create=False, readonly=True)
    assert readonly.format == 1 and readonly.journal_id == bytes.fromhex("ab12" * 8)
    assert readonly.max_seq() == 7
    assert readonly.rows_after(1) == [(2, 2, 2), (3, 1, 2), (7, 3, 1)]
    readonly.close(checkpoint=False)

    journal = Journal(path, create=True)
    assert journal.format == 2 and journal.journal_id == bytes.fromhex("ab12" * 8)
    assert journal.rows_after(0) == [(r[0], r[3], r[4]) for r in OLD_ROWS]
    blocks = list(journal.blocks_after(0, full=True))
    assert [(b.first_seq, b.last_seq) for b in blocks] == [(1, 3), (7, 7)]
    assert blocks[0].users == ["ann", "bob", ""] and blocks[0].timestamps == [T0 + 5, T0 + 6,
                                                                                T0 + 7]
    last, kept = journal.append(columns([(10, "dé", 1, "k1"), (11, "ann", 2, None)]), [4, 1])
    assert (last, kept) == ((8, [1]) if with_eid else (9, [0, 1]))  # k1 was known
    journal.close()
    tables = {n for (n,) in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "events" not in tables


def test_a_snapshot_of_a_format_1_journal_stays_valid_after_the_upgrade(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    make_format_1(datadir.journal_path(HOUR), OLD_ROWS)
    old = Journal(datadir.journal_path(HOUR), create=False, readonly=True)
    aggregate = HourAggregate(HOUR)
    loader.replay(aggregate, old)
    loader.write_snapshot(datadir, aggregate, old.journal_id)
    old.close(checkpoint=False)

    journal = datadir.open_journal(HOUR, create=True)
    assert loader.snapshot_base(datadir, HOUR, journal) == aggregate
    result = loader.load(datadir, HOUR, journal, None)
    assert result.snapshot_used and result.replayed == 0
    assert result.aggregate.counts() == aggregate.counts()
    journal.close()


def test_a_format_1_row_that_cannot_be_upgraded_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    make_format_1(path, [(1, T0, "ann", 2**40, 1, None)])  # an id no bitmap can hold
    with pytest.raises(CorruptFile, match="cannot be upgraded"):
        Journal(path, create=True)
    assert Journal(path, create=False, readonly=True).format == 1  # left as it was


def test_a_reader_of_format_1_reads_on_after_the_server_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    make_format_1(path, OLD_ROWS)
    reader = Journal(path, create=False, readonly=True)
    Journal(path, create=True).close()  # the server opens the hour for writing
    assert reader.max_seq() == 7
    assert reader.rows_after(0) == [(r[0], r[3], r[4]) for r in OLD_ROWS]
    reader.close(checkpoint=False)


def test_an_earlier_build_cannot_write_beside_the_blocks(tmp_path: Path) -> None:
    """What the format-1 code ran on open; the ``events`` view makes it fail loudly."""
    path = tmp_path / "j.sqlite"
    Journal(path, create=True).close()
    db = sqlite_utils.Database(sqlite3.connect(path))
    with pytest.raises(Exception, match="view"):
        db.table("events").create({"seq": int, "ts": int, "user": str, "uid": int,
                                   "kind": int, "eid": str}, pk="seq", if_not_exists=True)
        db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_by_eid ON events(eid) "
                   "WHERE eid IS NOT NULL")


def test_compact_shrinks_an_upgraded_journal(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    users = datadir.open_users()
    ids = users.assign([f"user-{i}" for i in range(3000)])
    users.close()
    make_format_1(datadir.journal_path(HOUR), [
        (seq, T0 + seq, "", ids[f"user-{seq % 3000}"], 1, None) for seq in range(1, 6001)])
    journal = Journal(datadir.journal_path(HOUR), create=True)  # upgraded: free pages left
    journal.close()
    size = datadir.journal_path(HOUR).stat().st_size
    result = compact_hour(datadir, HOUR)
    assert result.status == "compacted" and result.events == 6000
    assert datadir.journal_path(HOUR).stat().st_size < size
    assert compact_hour(datadir, HOUR).status == "already compact"


@pytest.mark.parametrize("uid", [-1, "x", 2**40])
def test_a_damaged_format_1_row_is_corrupt_when_read_as_it_is(tmp_path: Path, uid: object) -> None:
    path = tmp_path / f"{HOUR}.sqlite"
    make_format_1(path, [(1, T0, "ann", 1, 1, None), (2, T0, "bob", uid, 1, None)])  # type: ignore[list-item]
    for journal in (Journal(path, create=False, readonly=True),
                    Journal(path, create=False, upgrade=False)):
        assert journal.format == 1
        with pytest.raises(CorruptFile, match=f"{path}: format-1 rows 1..2"):
            list(journal.blocks_after(0))
        with pytest.raises(CorruptFile):
            loader.replay(HourAggregate(HOUR), journal)
        journal.close(checkpoint=False)

"""The block journal: what goes in comes out, ids count once, damage is corruption, a
journal is created whole, handles close once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import EventColumns
from shardstats.errors import CorruptFile
from shardstats.shards import loader
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal
from tests.storage.journals import HOUR, OLD_ROWS, T0, UIDS, columns, make_format_1

event = st.tuples(st.integers(0, 3_599_999), st.sampled_from(["ann", "bob", "cy", "dé"]),
                  st.sampled_from([1, 2]), st.none() | st.sampled_from(["e1", "e2", "e3"]))


@settings(max_examples=60)
@given(st.lists(st.lists(event, max_size=12), max_size=8), st.integers(0, 40))
def test_append_then_read_back_with_ids_counted_once(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[int, str, int, str | None]]],
    cut: int,
) -> None:
    path = tmp_path_factory.mktemp("j") / "j.sqlite"
    journal = Journal(path, create=True)
    expected: list[tuple[int, str, int, str | None]] = []
    seen: set[str] = set()
    for batch in batches:
        kept_model = []
        for i, e in enumerate(batch):
            if e[3] is None or e[3] not in seen:
                kept_model.append(i)
                if e[3] is not None:
                    seen.add(e[3])
        last, kept = journal.append(columns(batch), [UIDS[e[1]] for e in batch])
        assert (kept if kept is not None else list(range(len(batch)))) == kept_model
        expected += [batch[i] for i in kept_model]
        assert last == len(expected)
    journal.close()

    journal = Journal(path, create=False, readonly=True)
    try:
        assert journal.max_seq() == len(expected)
        rows = journal.rows_after(cut)
        assert rows == [(seq, UIDS[e[1]], e[2]) for seq, e in enumerate(expected, start=1)
                        if seq > cut]
        full = [(seq, ts, user, uid, kind, eid)
                for b in journal.blocks_after(0, full=True)
                for seq, ts, user, uid, kind, eid in zip(
                    range(b.first_seq, b.last_seq + 1), b.timestamps or [], b.users or [],
                    b.uids, b.kinds, b.ids or [None] * len(b.uids), strict=True)]
        assert full == [(seq, T0 + e[0], e[1], UIDS[e[1]], e[2], e[3])
                        for seq, e in enumerate(expected, start=1)]
    finally:
        journal.close(checkpoint=False)


def test_user_strings_can_be_dropped_ids_stay(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", create=True)
    journal.append(columns([(1, "ann", 1, None), (2, "bob", 2, "x")]), [1, 2])
    assert journal.drop_user_strings() == 1
    (block,) = journal.blocks_after(0, full=True)
    assert block.users is None and block.uids == [1, 2] and block.ids == [None, "x"]
    assert journal.append(columns([(3, "cy", 1, "x")]), [3]) == (2, [])  # id still known
    journal.close()


def test_a_newline_in_a_user_is_refused_not_stored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", create=True)
    with pytest.raises(ValueError):
        journal.append(EventColumns([T0], ["a\nb"], [1]), [1])
    assert journal.max_seq() == 0
    journal.close()


def test_a_damaged_block_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, create=True)
    journal.append(columns([(1, "ann", 1, None), (2, "bob", 2, None)]), [1, 2])
    journal.connection.execute("UPDATE blocks SET uid = x'0100'")
    with pytest.raises(CorruptFile, match="block ending at seq 2"):
        list(journal.blocks_after(0))
    journal.close()


def test_damaged_timestamps_or_users_are_corrupt_not_a_crash(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", create=True)
    journal.append(columns([(1, "ann", 1, None), (2, "bob", 2, None)]), [1, 2])
    for damage in ("ts = x'0102'", "users = 'only-one'", "eids = 'a' || char(10) || 'b' "
                   "|| char(10) || 'c'", "kind = 7"):
        journal.connection.execute(f"UPDATE blocks SET {damage}")
        with pytest.raises(CorruptFile, match="block ending at seq 2"):
            list(journal.blocks_after(0, full=True))
    journal.close()


def test_opening_a_current_journal_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, create=True).close()
    before = path.read_bytes()
    journal = Journal(path, create=False)
    assert Path(f"{path}-wal").stat().st_size == 0  # no write transaction on open
    journal.close()
    assert path.read_bytes() == before


def test_a_load_leaves_no_wal_files_behind_and_writes_nothing(tmp_path: Path) -> None:
    current, old = tmp_path / "current.sqlite", tmp_path / "old.sqlite"
    journal = Journal(current, create=True)
    journal.append(columns([(1, "ann", 1, None)]), [1])
    journal.close()
    make_format_1(old, OLD_ROWS)
    for path, fmt, last in ((current, 2, 1), (old, 1, 7)):
        before = path.read_bytes()
        journal = Journal(path, create=False, upgrade=False)  # how past hours are loaded
        assert journal.format == fmt and journal.max_seq() == last
        journal.close(checkpoint=False)
        assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
        assert path.read_bytes() == before  # nothing written, nothing upgraded


def make_blank(path: Path, kind: str) -> None:
    """A journal as a crash between creating the file and its tables left it."""
    if kind == "zero-length":
        path.write_bytes(b"")
    else:  # what connect() wrote before the schema transaction: a WAL-mode header
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()


@pytest.mark.parametrize("kind", ["zero-length", "header-only"])
def test_a_journal_without_tables_reads_as_empty_and_is_not_written(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{HOUR}.sqlite"
    make_blank(path, kind)
    before = path.read_bytes()
    for journal in (Journal(path, create=False, readonly=True),
                    Journal(path, create=False, upgrade=False)):  # verify, and a GET's load
        assert journal.max_seq() == 0 and journal.rows_after(0) == []
        assert loader.replay(HourAggregate(HOUR), journal) == 0
        journal.close(checkpoint=False)
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    writer = Journal(path, create=True)  # a shard may write: it gets the tables
    writer.append(columns([(1, "ann", 1, None)]), [1])
    writer.close()
    assert Journal(path, create=False, readonly=True).rows_after(0) == [(1, 1, 1)]


def test_a_journal_is_created_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"{HOUR}.sqlite"

    def crash(journal: Journal, upgrade: bool) -> bytes:
        raise sqlite3.OperationalError("the process dies here")

    monkeypatch.setattr(Journal, "_init_schema", crash)
    with pytest.raises(Exception, match="dies here"):
        Journal(path, create=True)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no journal without tables, no temporary left
    journal = Journal(path, create=True)
    assert journal.max_seq() == 0
    journal.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_temporaries_a_crash_left_are_removed_on_start(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    Journal(datadir.journal_path(HOUR), create=True).close()
    stale = [datadir.journals / f".{HOUR}.sqlite.1.ab.tmp{suffix}" for suffix in ("", "-wal")]
    stale.append(datadir.snapshots / f".{HOUR}.snap.1.ab.tmp")
    fresh = datadir.journals / f".{HOUR}.sqlite.2.cd.tmp"
    for path in (*stale, fresh):
        path.write_bytes(b"x")
    for path in stale:
        os.utime(path, (0, 0))
    assert datadir.remove_stale_temporaries() == 3
    assert sorted(p.name for p in datadir.journals.iterdir()) == [fresh.name, f"{HOUR}.sqlite"]


def test_a_journal_missing_its_meta_table_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / f"{HOUR}.sqlite"
    Journal(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE meta")
    conn.close()
    before = path.read_bytes()
    for readonly in (True, False):  # verify, and a GET's load: neither writes the table back
        with pytest.raises(CorruptFile, match="no meta table"):
            Journal(path, create=False, readonly=readonly, upgrade=False)
    assert path.read_bytes() == before


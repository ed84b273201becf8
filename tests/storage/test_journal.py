"""The block journal: what goes in comes out, ids count once, format 1 is read and upgraded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import EventColumns
from shardstats.errors import CorruptFile
from shardstats.shards import loader
from shardstats.storage.journal import Journal

HOUR = 493_000
T0 = HOUR * 3_600_000

event = st.tuples(st.integers(0, 3_599_999), st.sampled_from(["ann", "bob", "cy", "dé"]),
                  st.sampled_from([1, 2]), st.none() | st.sampled_from(["e1", "e2", "e3"]))


def columns(batch: list[tuple[int, str, int, str | None]]) -> EventColumns:
    ids = [e[3] for e in batch]
    return EventColumns([T0 + e[0] for e in batch], [e[1] for e in batch],
                        [e[2] for e in batch], None if ids.count(None) == len(ids) else ids)


UIDS = {"ann": 1, "bob": 2, "cy": 3, "dé": 4}


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


def make_format_1(path: Path, rows: list[tuple[int, int, str, int, int, str | None]],
                  *, with_eid: bool = True) -> None:
    """A journal as shardstats wrote it before blocks: one row per event."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # as the earlier build opened every journal
    eid = ", eid TEXT" if with_eid else ""
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
                 f"user TEXT NOT NULL, uid INTEGER NOT NULL, kind INTEGER NOT NULL{eid})")
    if with_eid:
        conn.execute("CREATE UNIQUE INDEX events_by_eid ON events(eid) WHERE eid IS NOT NULL")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    else:
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [r[:5] for r in rows])
    conn.execute("CREATE TABLE meta ([key] TEXT PRIMARY KEY, [value] TEXT)")
    conn.execute("INSERT INTO meta VALUES ('journal_id', ?), ('schema_version', '1')",
                 ("ab12" * 8,))
    conn.commit()
    conn.close()


OLD_ROWS = [(1, T0 + 5, "ann", 1, 1, None), (2, T0 + 6, "bob", 2, 2, "k1"),
            (3, T0 + 7, "", 1, 2, None),  # a row compacted by the old tool
            (7, T0 + 9, "cy", 3, 1, None)]  # seqs need not be consecutive


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
    from shardstats.storage.datadir import DataDir

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


def test_damaged_timestamps_or_users_are_corrupt_not_a_crash(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", create=True)
    journal.append(columns([(1, "ann", 1, None), (2, "bob", 2, None)]), [1, 2])
    for damage in ("ts = x'0102'", "users = 'only-one'", "eids = 'a' || char(10) || 'b' "
                   "|| char(10) || 'c'", "kind = 7"):
        journal.connection.execute(f"UPDATE blocks SET {damage}")
        with pytest.raises(CorruptFile, match="block ending at seq 2"):
            list(journal.blocks_after(0, full=True))
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


def test_opening_a_current_journal_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, create=True).close()
    before = path.read_bytes()
    journal = Journal(path, create=False)
    assert Path(f"{path}-wal").stat().st_size == 0  # no write transaction on open
    journal.close()
    assert path.read_bytes() == before


def test_an_earlier_build_cannot_write_beside_the_blocks(tmp_path: Path) -> None:
    """What the format-1 code ran on open; the ``events`` view makes it fail loudly."""
    import sqlite_utils

    path = tmp_path / "j.sqlite"
    Journal(path, create=True).close()
    db = sqlite_utils.Database(sqlite3.connect(path))
    with pytest.raises(Exception, match="view"):
        db.table("events").create({"seq": int, "ts": int, "user": str, "uid": int,
                                   "kind": int, "eid": str}, pk="seq", if_not_exists=True)
        db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_by_eid ON events(eid) "
                   "WHERE eid IS NOT NULL")


def test_compact_shrinks_an_upgraded_journal(tmp_path: Path) -> None:
    from shardstats.ops.compact import compact_hour
    from shardstats.storage.datadir import DataDir

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
    import os

    from shardstats.storage.datadir import DataDir

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

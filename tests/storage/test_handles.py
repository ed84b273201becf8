"""Storage handles are context managers: the journal, the user store and the data-dir lock
close (or release) on leaving the block, also when it raises, and closing twice is harmless."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shardstats.errors import DataDirLocked
from shardstats.storage.datadir import DataDir
from shardstats.storage.lock import DataDirLock
from tests.storage.journals import HOUR, columns


def closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
        return True
    return False


def test_a_journal_closes_on_leaving_the_block_and_folds_its_wal(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    with datadir.open_journal(HOUR, create=True) as journal:
        journal.append(columns([(1, "ann", 1, None)]), [1])
        assert Path(f"{journal.path}-wal").stat().st_size > 0
    assert closed(journal.connection)
    assert not Path(f"{journal.path}-wal").exists()  # the last close folds and removes it
    journal.close()  # again: nothing to do, no error
    with datadir.open_journal(HOUR, create=False, readonly=True) as reader:
        assert reader.max_seq() == 1
    assert closed(reader.connection)


def test_a_journal_closes_when_the_block_raises(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    with pytest.raises(RuntimeError), datadir.open_journal(HOUR, create=True) as journal:
        raise RuntimeError("boom")
    assert closed(journal.connection)


def test_the_user_store_closes_on_leaving_the_block(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    with datadir.open_users() as store:
        ids = store.assign(["ann", "bob"])
    store.close()  # again: nothing to do, no error
    with datadir.open_users(readonly=True) as reader:
        assert dict(reader.names(ids.values())) == {v: k for k, v in ids.items()}
        assert reader.integrity_problems() == []
    with pytest.raises(sqlite3.ProgrammingError):
        list(reader.names([1]))


def test_the_lock_is_held_inside_the_block_only(tmp_path: Path) -> None:
    with DataDirLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(DataDirLocked), DataDirLock(tmp_path):
            pass
    assert not lock.held
    lock.release()  # again: nothing to do
    with DataDirLock(tmp_path) as again:
        assert again.held

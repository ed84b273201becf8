"""users.issued, the user dictionary's mark: its file format, atomic replacement, and the
start-up check it serves (``shardstats.storage.issued``)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from shardstats.core.events import EventColumns
from shardstats.errors import DictionaryBehind
from shardstats.ops.verify import verify
from shardstats.storage import issued
from shardstats.storage.datadir import DataDir
from shardstats.storage.issued import Mark

HOUR = 490_000


def test_a_mark_reads_back_and_any_torn_or_damaged_copy_is_refused() -> None:
    data = issued.encode(Mark(seed=2**62 + 5, ids=123_456))
    assert issued.decode(data) == Mark(2**62 + 5, 123_456)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            issued.decode(data[:cut])
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        with pytest.raises(ValueError):
            issued.decode(bytes(damaged))


def test_a_mark_that_does_not_parse_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    datadir = DataDir(tmp_path)
    assert datadir.read_users_mark() is None  # none yet
    datadir.users_mark_path.write_bytes(b"\xff\x00 not a mark")
    with caplog.at_level(logging.WARNING):
        assert datadir.read_users_mark() is None
    assert "not a valid mark" in caplog.text


def test_a_torn_temporary_file_is_never_read_and_is_cleaned_up(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    datadir.write_users_mark(Mark(7, 10))
    whole = issued.encode(Mark(7, 99))
    torn = tmp_path / ".users.issued.4242.deadbeef.tmp"  # a crash before the rename
    torn.write_bytes(whole[: len(whole) // 2])
    fresh = tmp_path / ".users.issued.4243.cafe0000.tmp"  # a writer that is still at it
    fresh.write_bytes(whole[:5])
    other = tmp_path / ".not-ours.tmp"
    other.write_bytes(b"")
    assert datadir.read_users_mark() == Mark(7, 10)
    old = time.time() - 3600
    for path in (torn, other):
        os.utime(path, (old, old))
    assert datadir.remove_stale_temporaries() == 1
    assert not torn.exists() and fresh.exists() and other.exists()


def test_a_write_that_fails_before_its_rename_leaves_the_old_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    datadir.write_users_mark(Mark(7, 10))

    def crash(*args: object) -> None:
        raise OSError("the machine stopped here")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        datadir.write_users_mark(Mark(7, 20))
    monkeypatch.undo()
    assert datadir.read_users_mark() == Mark(7, 10)
    # What a crash at that point leaves: the new mark in a temporary file, never read.
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".users.issued.")]
    assert issued.decode(left.read_bytes()) == Mark(7, 20)


# -- the start-up check ---------------------------------------------------------------------


def dictionary_with(datadir: DataDir, count: int) -> int:
    """``count`` users in the dictionary; returns its seed."""
    with datadir.open_users() as store:
        store.assign([f"user-{i}" for i in range(count)])
        return store.seed


def journal_with(datadir: DataDir, hour: int, uids: list[int]) -> None:
    events = EventColumns([hour * 3_600_000] * len(uids), [f"user-{u - 1}" for u in uids],
                          [0] * len(uids))
    with datadir.open_journal(hour, create=True) as journal:
        journal.append(events, uids)


@pytest.fixture
def datadir(tmp_path: Path) -> DataDir:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    return datadir


def test_a_fresh_or_earlier_data_directory_passes(datadir: DataDir) -> None:
    datadir.check_users()  # nothing at all
    journal_with(datadir, HOUR, [1, 2, 3])
    dictionary_with(datadir, 3)
    datadir.check_users()  # no mark: an earlier build's directory
    seed = dictionary_with(datadir, 3)
    datadir.write_users_mark(Mark(seed, 3))
    datadir.check_users()


def test_a_dictionary_below_its_mark_is_refused(datadir: DataDir) -> None:
    seed = dictionary_with(datadir, 3)
    journal_with(datadir, HOUR, [1, 2])
    datadir.write_users_mark(Mark(seed, 4))
    with pytest.raises(DictionaryBehind, match=r"holds 3 user ids, but .* held 4"):
        datadir.check_users()


def test_another_dictionary_is_refused_even_when_it_holds_more(datadir: DataDir) -> None:
    seed = dictionary_with(datadir, 5)
    journal_with(datadir, HOUR, [1])
    datadir.write_users_mark(Mark(seed + 1, 2))
    with pytest.raises(DictionaryBehind, match="another seed"):
        datadir.check_users()


def test_a_missing_dictionary_beside_journals_is_refused(datadir: DataDir) -> None:
    journal_with(datadir, HOUR, [1])
    datadir.write_users_mark(Mark(1, 1))
    with pytest.raises(DictionaryBehind, match=r"users\.sqlite is missing"):
        datadir.check_users()
    datadir.users_mark_path.unlink()  # no mark: the journal still shows the id
    with pytest.raises(DictionaryBehind, match=r"holds events of user id 1, but .* only 0"):
        datadir.check_users()


def test_with_no_journal_a_mark_that_does_not_fit_is_dropped(datadir: DataDir) -> None:
    """Nothing can be undercounted: start (a reset that kept the mark), and drop the mark,
    which would otherwise refuse every later start."""
    seed = dictionary_with(datadir, 2)
    datadir.write_users_mark(Mark(seed, 9))
    datadir.check_users()
    assert datadir.read_users_mark() is None


def test_only_the_newest_journals_are_read_and_a_damaged_one_is_skipped(
    datadir: DataDir,
) -> None:
    dictionary_with(datadir, 3)
    journal_with(datadir, HOUR, [1, 5])  # an id the dictionary lacks, in an old journal
    old = time.time() - 3600
    os.utime(datadir.journal_path(HOUR), (old, old))
    for k in range(1, issued.NEWEST_JOURNALS + 1):
        journal_with(datadir, HOUR + k, [1, 2, 3])
    datadir.check_users()  # not among the newest: not read (the mark is the full check)
    datadir.journal_path(HOUR + 9).write_bytes(b"not a database" * 100)
    os.utime(datadir.journal_path(HOUR), None)  # now among the newest
    with pytest.raises(DictionaryBehind, match=rf"{HOUR}\.sqlite holds events of user id 5"):
        datadir.check_users()


def test_verify_reports_a_dictionary_below_its_mark(datadir: DataDir) -> None:
    seed = dictionary_with(datadir, 3)
    journal_with(datadir, HOUR, [1, 2])
    datadir.write_users_mark(Mark(seed, 3))
    assert verify(datadir, [HOUR]).ok
    datadir.write_users_mark(Mark(seed, 4))
    report = verify(datadir, [HOUR])
    assert not report.ok
    assert report.problems == [f"{datadir.users_path} holds 3 user ids, but "
                               f"{datadir.users_mark_path} records that it held 4: it was "
                               "put back from an older backup"]


def test_the_check_leaves_the_journal_files_as_they_were(datadir: DataDir) -> None:
    dictionary_with(datadir, 3)
    journal_with(datadir, HOUR, [1, 2, 3])
    before = sorted(p.name for p in datadir.journals.iterdir())
    stat = os.stat(datadir.journal_path(HOUR))
    datadir.check_users()
    assert sorted(p.name for p in datadir.journals.iterdir()) == before
    after = os.stat(datadir.journal_path(HOUR))
    assert (after.st_mtime_ns, after.st_ctime_ns) == (stat.st_mtime_ns, stat.st_ctime_ns)

"""Snapshots off the request path (registry rules 8 and 9): closing an hour writes none, the
registry writes them later with a proof, and a cold load trusts a snapshot without opening the
journal only while the journal file is exactly as the proof says."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core import snapshot as codec
from shardstats.core.events import HOUR_MS, Event, EventColumns, EventKind, HourCounts
from shardstats.shards.service import Service
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal
from tests.shards.conftest import running
from tests.strategies import BASE_HOUR

NOW = (BASE_HOUR + 3) * HOUR_MS + 1234
A, B, C = BASE_HOUR - 5, BASE_HOUR - 6, BASE_HOUR - 7
REPO = Path(__file__).resolve().parents[2]


def make_service(data_dir: Path, **overrides: object) -> Service:
    settings = dataclasses.replace(Settings(data_dir=str(data_dir), preload_hours=0),
                                   **overrides)  # type: ignore[arg-type]
    return Service(settings, clock=FixedClock(NOW))


def ev(hour: int, i: int) -> Event:
    return Event(hour * HOUR_MS + i, f"user-{i}", EventKind.IMPRESSION)


async def write(data_dir: Path, hour: int, first: int, count: int, **overrides: object) -> None:
    async with running(make_service(data_dir, **overrides)) as service:
        for i in range(first, first + count):
            await service.submit(ev(hour, i))


def counts(n: int) -> HourCounts:
    return HourCounts(unique_users=n, clicks=0, impressions=n)


@pytest.fixture
def settle_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal counts as settled 50 ms after its last change instead of seconds (still far
    more than this machine's timestamp granularity); every test waits more than that."""
    monkeypatch.setattr(codec, "SETTLE_NS", 50_000_000)


async def test_evicting_an_hour_writes_no_snapshot_and_keeps_its_aggregate(
    tmp_path: Path,
) -> None:
    datadir = DataDir(tmp_path)
    async with running(make_service(tmp_path, max_open_shards=1)) as service:
        await service.submit(ev(A, 1))
        await service.submit(ev(B, 1))  # A's shard is closed to make room
        assert service.statistics().registry.open_shards == 1
        # Before rule 8 the eviction wrote A's snapshot (two fsyncs) before B could open.
        assert not datadir.snapshot_path(A).exists()
        assert service.statistics().registry.unsaved == 1
        assert await service.query(A) == counts(1)  # from memory
    # The shutdown wrote what was still unsaved.
    assert datadir.snapshot_path(A).exists() and datadir.snapshot_path(B).exists()
    async with running(make_service(tmp_path)) as service:
        assert await service.query(A) == counts(1)
        assert await service.query(B) == counts(1)


async def test_an_aggregate_the_cache_drops_is_written_in_the_background(
    tmp_path: Path,
) -> None:
    datadir = DataDir(tmp_path)
    async with running(make_service(tmp_path, max_open_shards=1, max_cached_hours=0)
                       ) as service:
        await service.submit(ev(A, 1))
        await service.submit(ev(B, 1))
        for _ in range(1000):  # the writer has no event to wait for: poll, 10 s at most
            if datadir.snapshot_path(A).exists():
                break
            await trio.sleep(0.01)
        assert datadir.snapshot_path(A).exists()
        assert await service.query(A) == counts(1)


async def test_unsaved_aggregates_the_cache_dropped_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots slower than the opens: the opens wait for room (rule 8) instead of keeping
    every dropped aggregate in memory."""
    real_write = DataDir.write_snapshot

    def slow_write(self: DataDir, hour: int, data: bytes) -> None:
        import time

        time.sleep(0.2)
        real_write(self, hour, data)

    monkeypatch.setattr(DataDir, "write_snapshot", slow_write)
    limit = 2
    peak = 0
    async with running(make_service(tmp_path, max_open_shards=limit, max_cached_hours=0)
                       ) as service:
        for hour in range(BASE_HOUR - 20, BASE_HOUR):
            await service.submit(ev(hour, 1))
            peak = max(peak, service.statistics().registry.unsaved)
        for hour in range(BASE_HOUR - 20, BASE_HOUR):
            assert await service.query(hour) == counts(1)
    # ``limit`` dropped ones, plus the one retired by the open that waited for room, plus
    # the one the writer may be taking a proof of (busy, so not counted against the limit).
    assert peak <= limit + 2


async def test_a_proven_snapshot_is_loaded_without_opening_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settle_fast: None
) -> None:
    await write(tmp_path, A, 0, 5)
    await trio.sleep(0.1)
    async with running(make_service(tmp_path)) as service:
        assert await service.query(A) == counts(5)  # opens the journal, queues a proof
    snap = codec.decode(DataDir(tmp_path).snapshot_path(A).read_bytes())
    assert snap.proof is not None and snap.aggregate.last_seq == 5

    opened: list[Path] = []
    real_init = Journal.__init__

    def spy(self: Journal, path: Path, **kwargs: Any) -> None:
        opened.append(path)
        real_init(self, path, **kwargs)

    async with running(make_service(tmp_path, max_cached_hours=0)) as service:
        # From here: the start-up check reads the newest journals (it must leave their
        # proofs intact, or the loads below would open them).
        monkeypatch.setattr(Journal, "__init__", spy)
        for _ in range(3):  # every one a cold load: nothing is cached
            assert await service.query(A) == counts(5)
        assert service.statistics().registry.loads == 3
    assert opened == []


# -- a snapshot whose journal changed is never trusted ---------------------------------------


def append_directly(path: Path, hour: int, n: int) -> None:
    """Rows as a shard commits them (ids from the dictionary first), written behind the
    registry's back."""
    events = EventColumns.of([ev(hour, 1000 + i) for i in range(n)])
    with DataDir(path.parent.parent).open_users() as users:
        ids = users.assign(events.users)
    journal = Journal(path, create=True)
    try:
        journal.append(events, [ids[user] for user in events.users])
    finally:
        journal.close()


def crash_after_commit(path: Path, hour: int) -> None:
    """A writer that commits one row and dies (kill -9) before closing: the row is in the
    ``-wal`` file only, and the journal file itself is untouched."""
    code = ("import os, sys\n"
            "from pathlib import Path\n"
            "from tests.shards.test_deferred_snapshots import append_directly\n"
            "from shardstats.storage.journal import Journal\n"
            "Journal.close = lambda self, **kw: os._exit(0)\n"
            f"append_directly(Path({str(path)!r}), {hour}, 1)\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    assert Path(f"{path}-wal").exists()


def mutate(how: str, journal: Path, older_copy: Path) -> int:
    """Change the journal of hour A after its proven snapshot was written; returns how many
    events the journal then holds."""
    before = os.stat(journal)
    if how == "appended":
        append_directly(journal, A, 1)
        return 6
    if how == "appended-mtime-restored":  # like ``touch -d`` or ``cp -p``: only ctime tells
        append_directly(journal, A, 1)
        os.utime(journal, ns=(before.st_atime_ns, before.st_mtime_ns))
        return 6
    if how == "older-copy-restored-in-place":  # same inode, same mtime: only ctime tells
        shutil.copyfile(older_copy, journal)
        os.utime(journal, ns=(before.st_atime_ns, before.st_mtime_ns))
        return 3
    if how == "older-copy-moved-in":  # another inode
        shutil.copy2(older_copy, older_copy.with_suffix(".tmp"))
        os.replace(older_copy.with_suffix(".tmp"), journal)
        return 3
    if how == "crashed-writer":  # a committed row left in the -wal file
        crash_after_commit(journal, A)
        return 6
    raise AssertionError(how)


MUTATIONS = ["appended", "appended-mtime-restored", "older-copy-restored-in-place",
             "older-copy-moved-in", "crashed-writer"]


async def proven_then_changed(tmp_path: Path, how: str) -> int:
    datadir = DataDir(tmp_path)
    journal = datadir.journal_path(A)
    await write(tmp_path, A, 0, 3)
    older_copy = tmp_path / "older.sqlite"
    shutil.copy2(journal, older_copy)
    await write(tmp_path, A, 3, 2)
    await trio.sleep(0.1)
    async with running(make_service(tmp_path)) as service:
        assert await service.query(A) == counts(5)
    snap = codec.decode(datadir.snapshot_path(A).read_bytes())
    assert snap.proof is not None and snap.aggregate.last_seq == 5
    await trio.sleep(0.1)  # the change below is well after the proof's state
    return mutate(how, journal, older_copy)


@pytest.mark.parametrize("how", MUTATIONS)
async def test_a_snapshot_whose_journal_changed_is_never_trusted(
    tmp_path: Path, settle_fast: None, how: str
) -> None:
    expected = await proven_then_changed(tmp_path, how)
    async with running(make_service(tmp_path)) as service:
        got = await service.query(A)
    assert got.impressions == expected


def weak_journal_state(self: DataDir, hour: int) -> codec.JournalState | None:
    """A proof as one might first write it: trusts mtime, ignores ctime and the -wal file."""
    try:
        st = os.stat(self.journal_path(hour))
    except FileNotFoundError:
        return None
    return codec.JournalState(st.st_dev, st.st_ino, 0, st.st_mtime_ns, 0)


@pytest.mark.parametrize("how", ["appended-mtime-restored", "older-copy-restored-in-place",
                                 "crashed-writer"])
async def test_the_check_above_catches_a_weaker_proof(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settle_fast: None, how: str
) -> None:
    """The test above is strong enough: with a proof that ignores ctime and the -wal file, the
    stale snapshot is trusted and it sees the wrong count."""
    monkeypatch.setattr(DataDir, "journal_state", weak_journal_state)
    expected = await proven_then_changed(tmp_path, how)
    async with running(make_service(tmp_path)) as service:
        got = await service.query(A)
    assert got.impressions == 5 != expected


async def test_opens_waiting_for_room_never_wait_on_their_own_hours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: an open waiting for unsaved aggregates to be written counted its own
    hour's, which the writer skips while the hour is being opened: with every dropped
    aggregate's hour being reopened at once, opens and writer waited on each other."""
    real_write = DataDir.write_snapshot

    def slow_write(self: DataDir, hour: int, data: bytes) -> None:
        import time

        time.sleep(0.05)
        real_write(self, hour, data)

    monkeypatch.setattr(DataDir, "write_snapshot", slow_write)
    hours = range(BASE_HOUR - 12, BASE_HOUR)
    async with running(make_service(tmp_path, max_open_shards=1, max_cached_hours=0)
                       ) as service:

        async def client(k: int) -> None:
            for i in range(12):
                await service.submit(ev(hours[(k + i) % len(hours)], 100 * k + i))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for k in range(24):
                    nursery.start_soon(client, k)
        total = [(await service.query(h)).impressions for h in hours]
    assert sum(total) == 24 * 12


async def test_an_open_does_not_wait_for_its_victims_journal_to_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 10: the victim's close (SQLite checkpoints the journal: fsyncs) runs beside the
    open that needed its slot; only past the allowance of closes under way do opens wait."""
    import threading

    release = threading.Event()
    real_close = Journal.close

    def held_close(self: Journal, **kwargs: Any) -> None:
        if self.path.name == f"{A}.sqlite":
            release.wait(30)
        real_close(self, **kwargs)

    monkeypatch.setattr(Journal, "close", held_close)
    async with running(make_service(tmp_path, max_open_shards=1)) as service:
        await service.submit(ev(A, 1))
        try:
            with trio.fail_after(20):  # a deadlock detector: B needs no close of A's to end
                await service.submit(ev(B, 1))
            stats = service.statistics().registry
            assert stats.open_shards == 1  # B; A is still closing
            assert len(service.registry._live) == 2  # the allowance: one close under way
        finally:
            release.set()
        assert await service.query(A) == counts(1)
        assert await service.query(B) == counts(1)

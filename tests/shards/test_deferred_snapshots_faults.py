"""Deferred snapshots when the disk refuses them (a review of issue 14): every snapshot write
fails while hours are evicted, reopened, read and shut down. Snapshots are a cache: the
answers stay exact, the shutdown completes, and the next start reads the journals."""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from shardstats.core.events import HOUR_MS, Event, EventKind
from shardstats.errors import DictionaryBehind
from shardstats.storage.datadir import DataDir
from tests.shards.conftest import running
from tests.shards.test_deferred_snapshots import ev, make_service
from tests.strategies import BASE_HOUR

HOURS = list(range(BASE_HOUR - 8, BASE_HOUR))


async def test_snapshot_writes_that_fail_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: list[int] = []

    def full_disk(self: DataDir, hour: int, data: bytes) -> None:
        time.sleep(0.01)  # in flight long enough for opens of the hour to race it
        failed.append(hour)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DataDir, "write_snapshot", full_disk)
    sent = dict.fromkeys(HOURS, 0)
    with trio.fail_after(60):
        async with running(make_service(tmp_path, max_open_shards=2, max_cached_hours=1,
                                        snapshot_interval_seconds=0.01)) as service:
            for round_ in range(4):
                for hour in HOURS:
                    await service.submit(ev(hour, round_ * 10 + sent[hour] % 3))
                    sent[hour] += 1
                    await trio.lowlevel.checkpoint()
                for hour in HOURS:
                    assert (await service.query(hour)).impressions == sent[hour]
    assert failed, "no snapshot write was attempted"
    monkeypatch.undo()
    for cached in (0, 4):
        async with running(make_service(tmp_path, max_cached_hours=cached)) as service:
            for hour in HOURS:
                assert (await service.query(hour)).impressions == sent[hour]


def read_files(path: Path) -> dict[str, bytes]:
    """A SQLite file as a backup takes it: the file and its -wal."""
    return {s: Path(f"{path}{s}").read_bytes() for s in ("", "-wal")
            if Path(f"{path}{s}").exists()}


def files(root: Path) -> dict[Path, bytes]:
    """Every file but those a SQLite reader may create: a -shm, an empty -wal."""
    found = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    return {path: data for path, data in found.items() if not path.name.endswith("-shm")
            and not (path.name.endswith("-wal") and not data)}


def put_back(path: Path, backup: dict[str, bytes]) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for suffix, data in backup.items():
        Path(f"{path}{suffix}").write_bytes(data)


async def test_a_dictionary_restored_from_an_older_backup_is_refused(tmp_path: Path) -> None:
    """The dictionary put back alone from an older backup would hand bob's id to carol (one
    user not counted): the service refuses to start and says why, changing nothing; the
    whole data directory put back from that backup starts."""
    hour = HOURS[0]
    datadir = DataDir(tmp_path)
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "alice", EventKind.CLICK))
    backup = read_files(datadir.users_path)
    whole = tmp_path.parent / (tmp_path.name + "-backup")
    shutil.copytree(tmp_path, whole, ignore=shutil.ignore_patterns("LOCK"))
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "bob", EventKind.CLICK))
    put_back(datadir.users_path, backup)
    kept = files(tmp_path)
    with pytest.raises(DictionaryBehind) as refused:
        await make_service(tmp_path).run()
    message = str(refused.value)
    assert f"{datadir.users_path} holds 1 user ids" in message, message
    assert f"{datadir.users_mark_path} records that it held 2" in message, message
    assert "Restore" in message and "as a whole" in message, message
    assert files(tmp_path) == kept

    shutil.rmtree(tmp_path)
    shutil.copytree(whole, tmp_path)
    async with running(make_service(tmp_path)) as service:  # the lock was released too
        await service.submit(Event(hour * HOUR_MS, "carol", EventKind.CLICK))
        assert (await service.query(hour)).unique_users == 2  # alice, carol: bob went too


async def test_without_a_mark_the_journals_catch_an_older_dictionary(tmp_path: Path) -> None:
    """A data directory of an earlier build has no mark: the newest journal's ids do."""
    hour = HOURS[0]
    datadir = DataDir(tmp_path)
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "alice", EventKind.CLICK))
    backup = read_files(datadir.users_path)
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "bob", EventKind.CLICK))
    newest = read_files(datadir.users_path)
    put_back(datadir.users_path, backup)
    datadir.users_mark_path.unlink()
    with pytest.raises(DictionaryBehind) as refused:
        await make_service(tmp_path).run()
    message = str(refused.value)
    assert f"{datadir.journal_path(hour)} holds events of user id 2" in message, message
    assert f"{datadir.users_path} holds only 1 ids" in message, message

    put_back(datadir.users_path, newest)  # the newest copy of users.sqlite put back
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "carol", EventKind.CLICK))
        assert (await service.query(hour)).unique_users == 3

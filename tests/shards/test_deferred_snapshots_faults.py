"""Deferred snapshots when the disk refuses them (a review of issue 14): every snapshot write
fails while hours are evicted, reopened, read and shut down. Snapshots are a cache: the
answers stay exact, the shutdown completes, and the next start reads the journals."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from shardstats.core.events import HOUR_MS, Event, EventKind
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


def put_back(path: Path, backup: dict[str, bytes]) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for suffix, data in backup.items():
        Path(f"{path}{suffix}").write_bytes(data)


@pytest.mark.xfail(strict=True, reason=(
    "Nothing compares the journals with users.sqlite at start: a dictionary restored from an "
    "older backup hands the ids its copy lacks to new users, which the journals already give "
    "to others (one user is not counted). Not from issue 14; `shardstats verify` reports it "
    "afterwards as renamed users. A fix needs the dictionary rebuilt from the journals' "
    "(user, id) pairs, which compacted journals no longer hold."))
async def test_a_dictionary_restored_from_an_older_backup_gives_no_taken_id(
    tmp_path: Path,
) -> None:
    hour = HOURS[0]
    users = DataDir(tmp_path).users_path
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "alice", EventKind.CLICK))
    backup = read_files(users)
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "bob", EventKind.CLICK))
    put_back(users, backup)
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(hour * HOUR_MS, "carol", EventKind.CLICK))
        assert (await service.query(hour)).unique_users == 3

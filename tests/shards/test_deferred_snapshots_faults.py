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

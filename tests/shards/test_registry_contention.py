"""Many requests wanting hours at once: each wanted hour opens (or loads) about once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from shardstats.core.events import HOUR_MS, Event, EventKind
from shardstats.errors import StorageError
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal
from tests.shards.conftest import running
from tests.shards.test_service import make_service
from tests.strategies import BASE_HOUR


@pytest.mark.parametrize("max_open", [1, 2])
@pytest.mark.parametrize("per_hour", [1, 3])
async def test_hours_wanted_at_once_open_about_once_each(
    tmp_path: Path, max_open: int, per_hour: int
) -> None:
    hours = [BASE_HOUR - 1 - k for k in range(64)]
    async with running(
        make_service(tmp_path, max_open_shards=max_open, max_cached_hours=768, preload_hours=0)
    ) as service:
        before = service.statistics().registry.opens
        async with trio.open_nursery() as nursery:
            for hour in hours:
                for i in range(per_hour):
                    event = Event(hour * HOUR_MS + i, f"u{i}", EventKind.CLICK)
                    nursery.start_soon(service.submit, event)
        opens = service.statistics().registry.opens - before
        assert opens <= 2 * len(hours), f"{opens} opens for {len(hours)} hours"
        for hour in hours:
            assert (await service.query(hour)).clicks == per_hour


async def test_concurrent_reads_of_an_uncached_hour_share_one_load(tmp_path: Path) -> None:
    hour = BASE_HOUR - 5
    async with running(make_service(tmp_path)) as service:
        for i in range(3):
            await service.submit(Event(hour * HOUR_MS + i, f"u{i}", EventKind.CLICK))
    async with running(
        make_service(tmp_path, max_cached_hours=0, max_open_shards=1, preload_hours=0)
    ) as service:
        before = service.statistics().registry.loads
        answers = []

        async def query() -> None:
            answers.append(await service.query(hour))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(query)
        assert service.statistics().registry.loads - before == 1
        assert [a.clicks for a in answers] == [3] * 50


async def test_a_failed_open_returns_its_base_within_the_cache_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = BASE_HOUR - 7, BASE_HOUR - 8
    async with running(make_service(tmp_path)) as service:
        for hour in (first, second):
            await service.submit(Event(hour * HOUR_MS, "u", EventKind.CLICK))
    async with running(
        make_service(tmp_path, max_cached_hours=1, preload_hours=0)
    ) as service:
        await service.query(first)  # cached: the base of the next open of the hour
        opening, release = threading.Event(), threading.Event()
        real_open = DataDir.open_journal

        def failing_open(self: DataDir, hour: int, **kwargs: Any) -> Journal:
            if hour == first and kwargs.get("create"):
                opening.set()
                release.wait()
                raise StorageError("the disk is gone")
            return real_open(self, hour, **kwargs)

        monkeypatch.setattr(DataDir, "open_journal", failing_open)
        async with trio.open_nursery() as nursery:

            async def submit() -> None:
                with pytest.raises(StorageError):
                    await service.submit(Event(first * HOUR_MS + 1, "v", EventKind.CLICK))

            nursery.start_soon(submit)
            await trio.to_thread.run_sync(opening.wait)
            await service.query(second)  # fills the cache while the open is failing
            release.set()
        assert service.statistics().registry.cached_hours == 1
        assert (await service.query(first)).clicks == 1

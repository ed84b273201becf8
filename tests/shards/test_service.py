"""The actors end to end, without HTTP: exactness, restart, eviction, commit failures."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS, Event, EventColumns, EventKind, HourCounts
from shardstats.errors import StorageError
from shardstats.shards.service import Service
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal
from tests.model import Model
from tests.shards.conftest import running
from tests.strategies import BASE_HOUR, events

NOW = (BASE_HOUR + 3) * HOUR_MS + 1234
SMALL: dict[str, Any] = dict(max_open_shards=2, max_cached_hours=1, shard_idle_seconds=0.2)


def make_service(data_dir: Path, *, datadir: DataDir | None = None, **overrides: Any) -> Service:
    settings = dataclasses.replace(Settings(data_dir=str(data_dir)), **overrides)
    return Service(settings, clock=FixedClock(NOW), datadir=datadir)


async def submit_all(service: Service, evts: Sequence[Event], concurrency: int) -> None:
    async with trio.open_nursery() as nursery:
        for worker in range(concurrency):
            nursery.start_soon(_submit_some, service, evts[worker::concurrency])


async def _submit_some(service: Service, evts: Sequence[Event]) -> None:
    for event in evts:
        await service.submit(event)


async def answers(service: Service, hours: range) -> dict[int, HourCounts]:
    return {hour: await service.query(hour) for hour in hours}


HOURS = range(BASE_HOUR - 1, BASE_HOUR + 5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evts=st.lists(events(hours=4), max_size=120), concurrency=st.integers(1, 8))
async def test_exact_through_eviction_restart_and_lost_snapshots(
    tmp_path_factory: pytest.TempPathFactory, evts: list[Event], concurrency: int
) -> None:
    data_dir = tmp_path_factory.mktemp("data")
    model = Model().add_all(evts)
    expected = {hour: model.counts(hour) for hour in HOURS}

    async with running(make_service(data_dir, **SMALL)) as service:
        await submit_all(service, evts, concurrency)
        assert await answers(service, HOURS) == expected
        stats = service.statistics().registry
        assert stats.open_shards <= 2 and stats.cached_hours <= 1

    async with running(make_service(data_dir, **SMALL)) as service:
        assert await answers(service, HOURS) == expected

    for snap in (data_dir / "snapshots").glob("*.snap"):
        snap.unlink()
    async with running(make_service(data_dir)) as service:
        assert await answers(service, HOURS) == expected


async def test_query_of_empty_hour_creates_nothing(tmp_path: Path) -> None:
    async with running(make_service(tmp_path)) as service:
        assert await service.query(BASE_HOUR - 100) == HourCounts()
    assert list((tmp_path / "journals").iterdir()) == []
    assert list((tmp_path / "snapshots").iterdir()) == []


class FaultyJournal(Journal):
    """Fails the commit on demand, either before or after the rows reach the disk."""

    fail: str | None = None  # None, "before" or "after"

    def append(self, events: EventColumns, uids: Sequence[int],
               stream_seq: int | None = None) -> tuple[int, list[int] | None]:
        if FaultyJournal.fail == "before":
            raise StorageError("injected: disk full")
        last = super().append(events, uids, stream_seq)
        if FaultyJournal.fail == "after":
            raise StorageError("injected: fsync reported failure")
        return last


class FaultyDataDir(DataDir):
    def open_journal(self, hour: int, *, create: bool, readonly: bool = False,
                     upgrade: bool = True) -> Journal:
        return FaultyJournal(self.journal_path(hour), create=create, readonly=readonly,
                             upgrade=upgrade)


def faulty_service(data_dir: Path) -> Service:
    return make_service(data_dir, datadir=FaultyDataDir(data_dir))


def click(user: str) -> Event:
    return Event(NOW, user, EventKind.CLICK)


async def test_failed_commit_fails_batch_and_leaves_memory_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hour = NOW // HOUR_MS
    async with running(faulty_service(tmp_path)) as service:
        await service.submit(click("a"))
        FaultyJournal.fail = "before"
        try:
            with pytest.raises(StorageError):
                await service.submit(click("b"))
            assert await service.query(hour) == HourCounts(1, 1, 0)
        finally:
            FaultyJournal.fail = None
        await service.submit(click("c"))  # reopens the journal and goes on
        assert await service.query(hour) == HourCounts(2, 2, 0)
    async with running(make_service(tmp_path)) as service:
        assert await service.query(hour) == HourCounts(2, 2, 0)


async def test_commit_reported_failed_but_on_disk_is_read_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a failed commit memory follows the file, not the error (PostgreSQL's lesson)."""
    hour = NOW // HOUR_MS
    async with running(faulty_service(tmp_path)) as service:
        FaultyJournal.fail = "after"
        try:
            with pytest.raises(StorageError):
                await service.submit(click("a"))
            assert await service.query(hour) == HourCounts()
        finally:
            FaultyJournal.fail = None
        with caplog.at_level(logging.WARNING):
            await service.submit(click("b"))
        assert await service.query(hour) == HourCounts(2, 2, 0)
        assert "reported as failed are on disk" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
async def test_damaged_or_stale_snapshot_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    hour = NOW // HOUR_MS
    async with running(make_service(tmp_path)) as service:
        for user in ("a", "b", "c"):
            await service.submit(click(user))
    snap = tmp_path / "snapshots" / f"{hour}.snap"
    data = snap.read_bytes()
    if damage == "truncate":
        snap.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        snap.write_bytes(data[:-9] + bytes([data[-9] ^ 0x10]) + data[-8:])
    else:  # a valid snapshot of another journal: wrong identity, must not be trusted
        other = tmp_path / "other"
        async with running(make_service(other)) as service:
            await service.submit(click("z"))
        snap.write_bytes((other / "snapshots" / f"{hour}.snap").read_bytes())
    with caplog.at_level(logging.WARNING):
        async with running(make_service(tmp_path)) as service:
            assert await service.query(hour) == HourCounts(3, 3, 0)
    assert "ignoring" in caplog.text


async def test_full_inbox_is_overload_not_growth(tmp_path: Path) -> None:
    """A blocked disk fills the bounded inbox; further submissions fail fast with 503."""
    from shardstats.errors import Overloaded

    gate = threading.Event()

    class SlowJournal(Journal):
        def append(self, events: EventColumns, uids: Sequence[int],
                   stream_seq: int | None = None) -> tuple[int, list[int] | None]:
            gate.wait(10)
            return super().append(events, uids, stream_seq)

    class SlowDataDir(DataDir):
        def open_journal(self, hour: int, *, create: bool, readonly: bool = False,
                         upgrade: bool = True) -> Journal:
            return SlowJournal(self.journal_path(hour), create=create, readonly=readonly,
                               upgrade=upgrade)

    service = make_service(tmp_path, datadir=SlowDataDir(tmp_path), inbox_size=2,
                           max_commit_events=1)
    outcomes: list[str] = []

    async def one(user: str) -> None:
        try:
            await service.submit(click(user))
            outcomes.append("ok")
        except Overloaded:
            outcomes.append("overloaded")

    async with running(service):
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, f"u{i}")
            # One event blocked in the commit, at most two queued: the other five or more
            # are refused without waiting for the disk.
            with trio.fail_after(10):
                while outcomes.count("overloaded") < 5:
                    await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert "overloaded" in outcomes
        ok = outcomes.count("ok")
        assert await service.query(NOW // HOUR_MS) == HourCounts(ok, ok, 0)


@pytest.mark.parametrize("damage", ["not-sqlite", "damaged-pages"])
async def test_unreadable_journal_fails_only_its_hour(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """Decision: an hour whose journal cannot be read answers 500 (with the file named in the
    log) while every other hour is served; the server never answers from a guess."""
    good, bad = NOW // HOUR_MS, NOW // HOUR_MS - 1
    async with running(make_service(tmp_path)) as service:
        for user in ("a", "b"):
            await service.submit(click(user))
            await service.submit(Event(bad * HOUR_MS + 5, user * 300, EventKind.IMPRESSION))
    path = tmp_path / "journals" / f"{bad}.sqlite"
    (tmp_path / "snapshots" / f"{bad}.snap").unlink()  # so the journal must be read
    if damage == "not-sqlite":
        path.write_bytes(b"garbage" * 1000)
    else:
        data = bytearray(path.read_bytes())
        for page in range(1, len(data) // 4096):
            data[page * 4096 : page * 4096 + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        async with running(make_service(tmp_path)) as service:
            assert await service.query(good) == HourCounts(2, 2, 0)
            with pytest.raises(StorageError):
                await service.query(bad)
            with pytest.raises(StorageError):
                await service.submit(Event(bad * HOUR_MS, "c", EventKind.CLICK))
            await service.submit(click("c"))
            assert await service.query(good) == HourCounts(3, 3, 0)
    assert f"hour {bad} is unavailable" in caplog.text
    assert str(path) in caplog.text


async def test_many_concurrent_openers_share_few_slots_without_deadlock(tmp_path: Path) -> None:
    """Openers that find every slot taken wait for a slot to change, never for each other
    (waiting on another opener's hour could make two openers wait on each other forever)."""
    service = make_service(tmp_path, max_open_shards=2, max_cached_hours=1)
    hours = [NOW // HOUR_MS - i for i in range(12)]
    async with running(service):
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for round_ in range(3):
                    for i, hour in enumerate(hours):
                        nursery.start_soon(
                            service.submit, Event(hour * HOUR_MS, f"u{round_}-{i}", EventKind.CLICK)
                        )
            for hour in hours:
                assert await service.query(hour) == HourCounts(3, 3, 0)
        assert service.statistics().registry.open_shards <= 2


async def test_no_cache_still_answers_past_hours(tmp_path: Path) -> None:
    """max_cached_hours = 0: a past hour is loaded for each read, never looped on."""
    past = NOW // HOUR_MS - 3
    async with running(make_service(tmp_path)) as service:
        await service.submit(Event(past * HOUR_MS, "a", EventKind.CLICK))
    async with running(make_service(tmp_path, max_cached_hours=0)) as service:
        with trio.fail_after(10):
            assert await service.query(past) == HourCounts(1, 1, 0)
            assert await service.query(past) == HourCounts(1, 1, 0)
        assert service.statistics().registry.cached_hours == 0

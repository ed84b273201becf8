"""Cluster mode against the in-memory log: the node's write path, materializer and read
barrier, compared with a plain model of what the log holds.

Whatever interleaving of publishes (through this node and "other nodes" writing to the log
directly), duplicate records, redeliveries, lost consumers, restarts, lost stream positions
and snapshots, every hour ends up with exactly the model's counts: each record applied once,
event ids counted once per hour, nothing lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstats.clock import FixedClock
from shardstats.cluster.barrier import Behind, Consistency
from shardstats.cluster.log import EventLog, LogRecord, LogStatistics
from shardstats.cluster.memory import InMemoryLog
from shardstats.config import Settings
from shardstats.core import stream
from shardstats.core.events import HOUR_MS, Event, EventColumns, EventKind, HourCounts
from shardstats.errors import LogOutcomeUnknown, LogUnavailable
from shardstats.shards.service import Service
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal
from tests.model import Model
from tests.shards.conftest import running
from tests.strategies import BASE_HOUR

NOW = (BASE_HOUR + 3) * HOUR_MS + 1234
HOURS = [BASE_HOUR, BASE_HOUR + 1, BASE_HOUR + 2, BASE_HOUR + 3]


class Shared:
    """One in-memory log outliving the nodes that use it (a node closes its log on stop)."""

    def __init__(self, log: InMemoryLog) -> None:
        self.log = log

    async def publish(self, data: bytes, msg_id: str) -> int:
        return await self.log.publish(data, msg_id)

    async def last_seq(self) -> int:
        return await self.log.last_seq()

    def records(self, after_seq: int) -> AbstractAsyncContextManager[AsyncIterator[LogRecord]]:
        return self.log.records(after_seq)

    def statistics(self) -> LogStatistics:
        return self.log.statistics()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class FlakyJournal(Journal):
    """The next ``failures`` commits of any hour fail: before the disk, or after the rows
    landed (the shard must then read back what it was told had failed)."""

    failures: ClassVar[list[str]] = []

    def append(self, events: EventColumns, uids: Sequence[int],
               stream_seq: int | None = None) -> tuple[int, list[int] | None]:
        if FlakyJournal.failures and FlakyJournal.failures[0] == "before":
            FlakyJournal.failures.pop(0)
            raise OSError("injected: disk full")
        result = super().append(events, uids, stream_seq)
        if FlakyJournal.failures:
            FlakyJournal.failures.pop(0)
            raise OSError("injected: fsync failed after the rows landed")
        return result


class FlakyDataDir(DataDir):
    def open_journal(self, hour: int, *, create: bool, readonly: bool = False,
                     upgrade: bool = True) -> Journal:
        return FlakyJournal(self.journal_path(hour), create=create, readonly=readonly,
                            upgrade=upgrade)


def node(data_dir: Path, log: InMemoryLog, **overrides: object) -> Service:
    base = Settings(data_dir=str(data_dir), node_name="test-node", max_open_shards=2,
                    max_cached_hours=1)
    settings_ = dataclasses.replace(base, **overrides)  # type: ignore[arg-type]

    async def factory() -> EventLog:
        return Shared(log)

    return Service(settings_, clock=FixedClock(NOW), datadir=FlakyDataDir(data_dir),
                   log_factory=factory)


def model_of(log: InMemoryLog) -> dict[int, HourCounts]:
    """Every stored record in order; an event id counts once per hour (as the journals do)."""
    model = Model()
    seen: set[tuple[int, str]] = set()
    for record in log.stored():
        try:
            events = stream.decode(record.data)
        except stream.InvalidRecord:
            continue
        for event in events.events():
            if event.id is not None:
                if (event.hour, event.id) in seen:
                    continue
                seen.add((event.hour, event.id))
            model.add(event)
    return {hour: model.counts(hour) for hour in HOURS}


async def settled(service: Service) -> dict[int, HourCounts]:
    """A GET's answer once the node has caught up (a client retries a 503 "behind")."""
    with trio.fail_after(20):
        while True:
            try:
                assert await service.read_barrier() is Consistency.FRESH
                break
            except Behind:
                continue
    return {hour: await service.query(hour) for hour in HOURS}


events_st = st.builds(
    Event,
    st.sampled_from(HOURS).flatmap(lambda h: st.integers(h * HOUR_MS, h * HOUR_MS + 999)),
    st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
    st.sampled_from([EventKind.CLICK, EventKind.IMPRESSION]),
    st.one_of(st.none(), st.sampled_from(["e1", "e2", "e3"])),
)
steps = st.lists(st.one_of(
    st.tuples(st.just("post"), st.lists(events_st, min_size=1, max_size=5)),
    st.tuples(st.just("batch"), st.lists(events_st, min_size=1, max_size=20)),
    st.tuples(st.just("foreign"), st.lists(events_st, min_size=1, max_size=5)),
    st.tuples(st.just("duplicate_record"), st.none()),
    st.tuples(st.just("garbage"), st.none()),
    st.tuples(st.just("redeliver"), st.integers(1, 4)),
    st.tuples(st.just("break"), st.none()),
    st.tuples(st.just("fail_commits"), st.lists(st.sampled_from(["before", "after"]),
                                                min_size=1, max_size=3)),
    st.tuples(st.just("restart"), st.sampled_from(["plain", "lose_position",
                                                     "lose_snapshots"])),
), max_size=14)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps)
async def test_any_interleaving_of_faults_gives_the_models_answers(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, Any]]
) -> None:
    data_dir = tmp_path_factory.mktemp("node")
    log = InMemoryLog()
    FlakyJournal.failures.clear()
    foreign = 0
    segments: list[list[tuple[str, Any]]] = [[]]  # the plan cut at its restarts
    for step in plan:
        segments[-1].append(step)
        if step[0] == "restart":
            segments.append([])
    for segment in segments:
        async with running(node(data_dir, log)) as service:
            for action, arg in segment:
                if action == "post":
                    for event in arg:
                        await service.submit(event)
                        # Read-your-writes: a query after the 204 counts the event.
                        assert await settled(service) == model_of(log)
                elif action == "batch":
                    outcome = await service.submit_batch(EventColumns.of(arg))
                    assert all(error is None for error in outcome.values())
                elif action == "foreign":
                    foreign += 1
                    data = stream.encode(EventColumns.of(arg))
                    await log.publish(data, f"other-node:{foreign}")
                elif action == "duplicate_record":
                    # Another node's retry after the duplicate window: the same events again
                    # in a new record (counted again unless the events carry ids).
                    if log.stored():
                        last = log.stored()[-1]
                        await log.publish(last.data, last.msg_id + ":late")
                elif action == "garbage":
                    await log.publish(b"\x93not a block", f"garbage:{len(log.stored())}")
                elif action == "redeliver":
                    log.redeliver(arg)
                elif action == "break":
                    log.break_consumers()
                elif action == "fail_commits":
                    FlakyJournal.failures[:] = arg
            assert await settled(service) == model_of(log)
        final = segment[-1] if segment else None
        if final is not None and final[0] == "restart":
            files = DataDir(data_dir)
            if final[1] == "lose_position":
                files.stream_position_path.unlink(missing_ok=True)
            if final[1] == "lose_snapshots":
                for hour in files.snapshot_hours():
                    files.snapshot_path(hour).unlink()
    # A node started from nothing but the log (a new node) agrees.
    async with running(node(tmp_path_factory.mktemp("fresh"), log)) as fresh:
        assert await settled(fresh) == model_of(log)


async def test_publish_failures_map_to_their_statuses(tmp_path: Path) -> None:
    log = InMemoryLog()
    event = Event(HOURS[0] * HOUR_MS, "u", EventKind.CLICK)
    async with running(node(tmp_path, log)) as service:
        log.fail_publish("unavailable")
        with pytest.raises(LogUnavailable):
            await service.submit(event)
        log.fail_publish("unknown_stored")  # retried once with the same id: stored once
        await service.submit(event)
        log.fail_publish("unknown_lost", "unknown_lost")
        with pytest.raises(LogOutcomeUnknown):
            await service.submit(event)
        assert (await settled(service))[HOURS[0]] == HourCounts(1, 1, 0)
        assert len(log.stored()) == 1


async def test_reads_go_on_when_the_log_is_down(tmp_path: Path) -> None:
    log = InMemoryLog()
    event = Event(HOURS[1] * HOUR_MS, "u", EventKind.IMPRESSION)
    async with running(node(tmp_path, log)) as service:
        await service.submit(event)
        await settled(service)
        log.set_available(False)
        with trio.fail_after(10):
            assert await service.read_barrier() is Consistency.STALE
        assert await service.query(HOURS[1]) == HourCounts(1, 0, 1)
        with pytest.raises(LogUnavailable):
            await service.submit(event)
        log.set_available(True)
        await service.submit(event)
        assert (await settled(service))[HOURS[1]] == HourCounts(1, 0, 2)


async def test_an_unknown_outcome_stays_unknown_when_the_retry_cannot_be_sent(
    tmp_path: Path,
) -> None:
    """The first publish may have been stored: answering 503 ("nothing stored, retry") would
    invite a retry that counts the event twice."""
    log = InMemoryLog()
    event = Event(HOURS[0] * HOUR_MS, "u", EventKind.CLICK)
    async with running(node(tmp_path, log)) as service:
        log.fail_publish("unknown_stored", "unavailable")
        with pytest.raises(LogOutcomeUnknown):
            await service.submit(event)
        assert len(log.stored()) == 1


async def test_an_unstorable_record_from_outside_does_not_stop_the_node(tmp_path: Path) -> None:
    log = InMemoryLog()
    async with running(node(tmp_path, log)) as service:
        hostile = stream._encoder.encode((1, [2**63], ["x"], [1], None))
        await log.publish(hostile, "outsider:1")
        await service.submit(Event(HOURS[0] * HOUR_MS, "u", EventKind.CLICK))
        assert (await settled(service))[HOURS[0]] == HourCounts(1, 1, 0)

"""Cancellation is an input: a caller cancelled at any of its checkpoints while its request
opens, loads or evicts a shard must not cost an acknowledged event, before or after a restart,
with or without snapshots.

The canceller counts the *caller's own* scheduler steps (a trio instrument) and cancels it right
after the k-th one, so each k lands on a different await of the open/evict/load paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstats.core.events import HOUR_MS, Event, EventKind, HourCounts
from shardstats.errors import ShardstatsError
from shardstats.shards.service import Service
from shardstats.storage.datadir import DataDir, WriterConflict
from tests.shards.conftest import running
from tests.shards.test_service import make_service
from tests.strategies import BASE_HOUR

HOURS = [BASE_HOUR - 2, BASE_HOUR - 1, BASE_HOUR, BASE_HOUR + 1]
TIGHT: dict[str, Any] = dict(max_open_shards=1, max_cached_hours=1, shard_idle_seconds=60.0)


class CancelAfterSteps(trio.abc.Instrument):
    """Cancel ``scope`` right after ``task`` has run its ``steps``-th step."""

    def __init__(self, task: trio.lowlevel.Task, scope: trio.CancelScope, steps: int) -> None:
        self.task, self.scope, self.remaining = task, scope, steps
        self.fired = False

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and not self.fired:
            self.remaining -= 1
            if self.remaining <= 0:
                self.fired = True
                self.scope.cancel()


@dataclass
class Ledger:
    """Per hour: every event sent and the ones acknowledged (each user is unique)."""

    sent: dict[int, set[str]] = field(default_factory=dict)
    acked: dict[int, set[str]] = field(default_factory=dict)
    serial: int = 0

    def event(self, hour: int, kind: EventKind = EventKind.IMPRESSION) -> Event:
        self.serial += 1
        user = f"u{self.serial}"
        self.sent.setdefault(hour, set()).add(user)
        return Event(hour * HOUR_MS + self.serial, user, kind)

    def ack(self, event: Event) -> None:
        self.acked.setdefault(event.hour, set()).add(event.user)

    def check(self, counts: dict[int, HourCounts]) -> None:
        for hour in HOURS:
            acked = len(self.acked.get(hour, ()))
            sent = len(self.sent.get(hour, ()))
            got = counts[hour]
            assert got.unique_users == got.clicks + got.impressions, (hour, got)
            assert acked <= got.impressions <= sent, (hour, acked, got, sent)


async def submit(service: Service, ledger: Ledger, hour: int) -> None:
    event = ledger.event(hour)
    try:
        await service.submit(event)
    except ShardstatsError:
        return
    ledger.ack(event)


async def cancelled_submit(service: Service, ledger: Ledger, hour: int, steps: int) -> None:
    event = ledger.event(hour)
    with trio.CancelScope() as scope:
        instrument = CancelAfterSteps(trio.lowlevel.current_task(), scope, steps)
        trio.lowlevel.add_instrument(instrument)
        try:
            await service.submit(event)
        except ShardstatsError:
            return
        finally:
            trio.lowlevel.remove_instrument(instrument)
        ledger.ack(event)


async def cancelled_query(service: Service, hour: int, steps: int) -> None:
    with trio.CancelScope() as scope:
        instrument = CancelAfterSteps(trio.lowlevel.current_task(), scope, steps)
        trio.lowlevel.add_instrument(instrument)
        try:
            await service.query(hour)
        finally:
            trio.lowlevel.remove_instrument(instrument)


async def counts_of(service: Service) -> dict[int, HourCounts]:
    return {hour: await service.query(hour) for hour in HOURS}


# One round: background writers keep the victim hours busy while one caller, cancelled after
# its k-th step, opens a new hour (evicting) or loads a past one.
rounds = st.lists(
    st.tuples(
        st.sampled_from(HOURS),  # the cancelled caller's hour
        st.integers(1, 30),  # cancel after this many of its steps
        st.lists(st.sampled_from(HOURS), max_size=6),  # concurrent writers' hours
        st.booleans(),  # the caller queries instead of submitting
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=rounds)
async def test_cancelled_callers_never_lose_acknowledged_events(
    tmp_path_factory: pytest.TempPathFactory,
    plan: list[tuple[int, int, list[int], bool]],
) -> None:
    data_dir = tmp_path_factory.mktemp("data")
    ledger = Ledger()
    async with running(make_service(data_dir, **TIGHT)) as service:
        for hour, steps, writers, query in plan:
            async with trio.open_nursery() as nursery:
                for writer_hour in writers:
                    nursery.start_soon(submit, service, ledger, writer_hour)
                if query:
                    nursery.start_soon(cancelled_query, service, hour, steps)
                else:
                    nursery.start_soon(cancelled_submit, service, ledger, hour, steps)
        # Acknowledged after the storm: each hour once more, through eviction.
        for hour in HOURS:
            await submit(service, ledger, hour)
        before = await counts_of(service)
        ledger.check(before)

    async with running(make_service(data_dir, **TIGHT)) as service:
        assert await counts_of(service) == before

    for snap in (data_dir / "snapshots").glob("*.snap"):
        snap.unlink()
    async with running(make_service(data_dir)) as service:
        assert await counts_of(service) == before


@pytest.mark.parametrize("attempt", range(20))  # the race depends on worker-thread timing
async def test_cancelled_eviction_keeps_the_victims_commits(tmp_path: Path, attempt: int) -> None:
    """The reproduction from the issue: the caller that evicts a busy shard is cancelled
    while the victim still commits its queue; a later writer of the victim's hour must not
    open a second shard on the same journal."""
    ledger = Ledger()
    victim, other = HOURS[0], HOURS[1]
    async with running(make_service(tmp_path, **TIGHT)) as service:
        await cancelled_submit(service, ledger, victim, 2)
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(submit, service, ledger, victim)
            nursery.start_soon(cancelled_submit, service, ledger, other, 1)
        await submit(service, ledger, victim)
        before = await counts_of(service)
        ledger.check(before)
    async with running(make_service(tmp_path, **TIGHT)) as service:
        assert await counts_of(service) == before
    for snap in (tmp_path / "snapshots").glob("*.snap"):
        snap.unlink()
    async with running(make_service(tmp_path)) as service:
        assert await counts_of(service) == before


def test_a_second_writer_of_a_journal_is_refused_loudly(tmp_path: Path) -> None:
    first, second = DataDir(tmp_path), DataDir(tmp_path)  # even through another DataDir
    with (first.journal_writer(5), pytest.raises(WriterConflict, match="already has a writer"),
          second.journal_writer(5)):
        pass
    with second.journal_writer(5):  # released on exit
        pass

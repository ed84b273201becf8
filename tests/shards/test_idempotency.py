"""Optional event ids: a retried event (same id, same hour) is acknowledged, counted once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS, Event, EventColumns, EventKind, HourCounts
from shardstats.shards.service import Service
from tests.model import Model
from tests.shards.conftest import running
from tests.strategies import BASE_HOUR, events

NOW = (BASE_HOUR + 3) * HOUR_MS


def service_for(data_dir: Path) -> Service:
    return Service(dataclasses.replace(Settings(data_dir=str(data_dir))), clock=FixedClock(NOW))


async def test_retries_count_once_and_survive_restart(tmp_path: Path) -> None:
    hour = NOW // HOUR_MS
    first = Event(NOW, "alice", EventKind.CLICK, "evt-1")
    async with running(service_for(tmp_path)) as service:
        await service.submit(first)
        await service.submit(first)  # a retry after a lost 204
        await service.submit(Event(NOW, "bob", EventKind.CLICK))  # no id: always counted
        await service.submit(Event(NOW, "bob", EventKind.CLICK))
        assert await service.query(hour) == HourCounts(2, 3, 0)
    async with running(service_for(tmp_path)) as service:
        await service.submit(first)  # remembered across a restart: it is in the journal
        outcome = await service.submit_batch(EventColumns.of(
            [first, first, Event(NOW, "carol", EventKind.IMPRESSION, "evt-2")] * 2))
        assert outcome == {hour: None}
        assert await service.query(hour) == HourCounts(3, 3, 1)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evts=st.lists(events(hours=3), max_size=40, unique_by=lambda e: e), data=st.data())
async def test_any_retry_pattern_counts_each_event_once(
    tmp_path_factory: pytest.TempPathFactory, evts: list[Event], data: st.DataObject
) -> None:
    with_ids = [e._replace(id=f"e{i}") for i, e in enumerate(evts)]
    retries = data.draw(st.lists(st.sampled_from(with_ids), max_size=60) if with_ids
                        else st.just([]))
    order = data.draw(st.permutations(with_ids + retries))
    async with running(service_for(tmp_path_factory.mktemp("d"))) as service:
        half = len(order) // 2
        for event in order[:half]:
            await service.submit(event)
        await service.submit_batch(EventColumns.of(order[half:]))
        model = Model().add_all(with_ids)
        for hour in range(BASE_HOUR, BASE_HOUR + 3):
            assert await service.query(hour) == model.counts(hour)

"""Range queries and batch ingest against the plain model."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS, Event, EventColumns, EventKind, HourCounts
from shardstats.core.ranges import RangeQuery
from shardstats.shards.service import Service
from tests.model import Model
from tests.shards.conftest import running
from tests.strategies import BASE_HOUR, events

NOW = (BASE_HOUR + 50) * HOUR_MS
HOURS = 48  # events spread over two UTC days and a bit


def service_for(data_dir: Path, **overrides: object) -> Service:
    settings = dataclasses.replace(Settings(data_dir=str(data_dir)), **overrides)  # type: ignore[arg-type]
    return Service(settings, clock=FixedClock(NOW))


def expected_range(evts: list[Event], first: int, last: int) -> HourCounts:
    inside = [e for e in evts if first <= e.hour <= last]
    return HourCounts(
        len({e.user for e in inside}),
        sum(e.kind == 1 for e in inside),
        sum(e.kind == 2 for e in inside),
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evts=st.lists(events(hours=HOURS), max_size=150),
    bounds=st.tuples(st.integers(-2, HOURS + 1), st.integers(-2, HOURS + 1)),
    step=st.sampled_from(["hour", "day"]),
)
async def test_range_is_the_exact_union(
    tmp_path_factory: pytest.TempPathFactory,
    evts: list[Event],
    bounds: tuple[int, int],
    step: str,
) -> None:
    first, last = (BASE_HOUR + b for b in sorted(bounds))
    async with running(service_for(tmp_path_factory.mktemp("d"), max_cached_hours=5)) as svc:
        outcome = await svc.submit_batch(EventColumns.of(evts))
        assert all(error is None for error in outcome.values())
        total, series = await svc.range_counts(RangeQuery(first, last, step))
    assert total == expected_range(evts, first, last)
    for segment, following in zip(series, [*series[1:], None], strict=True):
        end = following.first_hour - 1 if following else last
        assert segment.counts == expected_range(evts, segment.first_hour, end)
        if step == "day":
            assert end // 24 == segment.first_hour // 24  # never crosses a UTC day
    covered = [s.first_hour for s in series]
    assert covered[0] == first and covered == sorted(covered)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evts=st.lists(events(hours=6), max_size=120), chunk=st.integers(1, 40))
async def test_batches_and_single_posts_give_identical_aggregates(
    tmp_path_factory: pytest.TempPathFactory, evts: list[Event], chunk: int
) -> None:
    hours = range(BASE_HOUR, BASE_HOUR + 6)
    async with running(service_for(tmp_path_factory.mktemp("single"))) as svc:
        for event in evts:
            await svc.submit(event)
        singles = {h: await svc.query(h) for h in hours}
    async with running(service_for(tmp_path_factory.mktemp("batch"))) as svc:
        for start in range(0, len(evts), chunk):
            await svc.submit_batch(EventColumns.of(evts[start : start + chunk]))
        batched = {h: await svc.query(h) for h in hours}
    model = Model().add_all(evts)
    assert singles == batched == {h: model.counts(h) for h in hours}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step=st.sampled_from(["hour", "day"]), writers=st.integers(1, 6), seed=st.integers(0, 99))
async def test_range_total_is_the_fold_of_its_series_under_writes_and_evictions(
    tmp_path_factory: pytest.TempPathFactory, step: str, writers: int, seed: int
) -> None:
    """Each event has its own user, so a consistent answer has total == sum of the series
    in every field. Writers and cold loads (two open shards, one cached hour) run meanwhile.

    16 hours (8x the open shards; it was 31): every query still cold-loads nearly every hour
    while writers reopen them, at half the loads per query."""
    rng = random.Random(seed)
    first, last = BASE_HOUR, BASE_HOUR + 15
    serial = 0

    async def write(count: int) -> None:
        nonlocal serial
        for _ in range(count):
            serial += 1
            hour = rng.randint(first, last)
            kind = EventKind(rng.choice((1, 2)))
            event = Event(hour * HOUR_MS + serial % HOUR_MS, f"w{serial}", kind)
            await svc.submit(event)

    data = tmp_path_factory.mktemp("d")
    async with running(service_for(data, max_open_shards=2, max_cached_hours=1)) as svc:
        await write(40)  # every hour of the range has a journal: reads are cold loads
        async with trio.open_nursery() as nursery:
            for _ in range(writers):
                nursery.start_soon(write, 25)
            for _ in range(15):
                total, series = await svc.range_counts(RangeQuery(first, last, step))
                folded = HourCounts(
                    sum(s.counts.unique_users for s in series),
                    sum(s.counts.clicks for s in series),
                    sum(s.counts.impressions for s in series),
                )
                assert total == folded

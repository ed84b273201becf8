"""Range queries and batch ingest against the plain model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS, Event, EventColumns, HourCounts
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

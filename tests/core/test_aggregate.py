"""The hour aggregate against the plain model, and snapshot + tail against full replay."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate, JournalRow
from shardstats.core.events import Event, EventKind, HourCounts
from tests.model import Model
from tests.strategies import events


def journal_rows(evts: list[Event]) -> tuple[dict[int, list[JournalRow]], dict[str, int]]:
    """What the shards would write: per-hour rows with increasing seq, dense user ids."""
    ids: dict[str, int] = {}
    rows: defaultdict[int, list[JournalRow]] = defaultdict(list)
    for event in evts:
        uid = ids.setdefault(event.user, len(ids) + 1)
        hour_rows = rows[event.hour]
        hour_rows.append((len(hour_rows) + 1, uid, int(event.kind)))
    return rows, ids


@given(st.lists(events(), max_size=300), st.integers(1, 50))
def test_aggregates_match_model_in_any_order_and_batching(evts: list[Event], chunk: int) -> None:
    model = Model().add_all(evts)
    rows, _ = journal_rows(evts)
    for hour, hour_rows in rows.items():
        aggregate = HourAggregate(hour)
        for start in range(0, len(hour_rows), chunk):
            aggregate.apply(hour_rows[start : start + chunk])
        assert aggregate.counts() == model.counts(hour)
        assert aggregate.last_seq == len(hour_rows)


@given(st.lists(events(hours=1), max_size=200), st.data())
def test_snapshot_plus_tail_equals_full_replay(evts: list[Event], data: st.DataObject) -> None:
    rows, _ = journal_rows(evts)
    for hour, hour_rows in rows.items():
        cut = data.draw(st.integers(0, len(hour_rows)))
        head = HourAggregate(hour)
        head.apply(hour_rows[:cut])
        restored = codec.decode(codec.encode(head, b"j" * 16)).aggregate
        # Replaying an overlapping tail must be harmless: rows <= last_seq are skipped.
        overlap = data.draw(st.integers(0, cut))
        restored.apply(hour_rows[overlap:])
        full = HourAggregate(hour)
        full.apply(hour_rows)
        assert restored == full


@given(st.lists(events(hours=1), max_size=200), st.integers(2, 5))
def test_merge_of_user_partitions_is_exact(evts: list[Event], parts: int) -> None:
    """Nodes owning disjoint partitions of users merge to the exact whole."""
    rows, _ids = journal_rows(evts)
    for hour, hour_rows in rows.items():
        partials = [HourAggregate(hour) for _ in range(parts)]
        for seq, uid, kind in hour_rows:
            partials[uid % parts].apply([(seq, uid, kind)])
        merged = partials[0]
        for other in partials[1:]:
            merged = merged.merged(other)
        assert merged.counts() == Model().add_all(evts).counts(hour)


def test_apply_ignores_rows_already_covered() -> None:
    aggregate = HourAggregate(7)
    assert aggregate.apply([(1, 10, 1), (2, 11, 2)]) == 2
    assert aggregate.apply([(2, 11, 2), (3, 12, 2)]) == 1
    assert (aggregate.clicks, aggregate.impressions, aggregate.last_seq) == (1, 2, 3)
    assert aggregate.users == BitMap([10, 11, 12])


def test_copy_is_independent() -> None:
    aggregate = HourAggregate(7)
    aggregate.apply([(1, 10, 1)])
    clone = aggregate.copy()
    aggregate.apply([(2, 11, 1)])
    assert clone.counts().unique_users == 1 and aggregate.counts().unique_users == 2


def test_a_frozen_aggregate_refuses_changes_and_is_its_own_view() -> None:
    live = HourAggregate(7)
    live.apply([(1, 10, EventKind.CLICK)])
    view = live.view()
    assert view is not live and view == live and view.frozen and not live.frozen
    live.apply_block(2, [11], [EventKind.IMPRESSION])
    assert view.counts() == HourCounts(1, 1, 0)  # the view did not move with the live one
    assert view.view() is view
    with pytest.raises(RuntimeError, match="frozen"):
        view.apply_block(3, [12], [EventKind.CLICK])
    with pytest.raises(RuntimeError, match="frozen"):
        view.apply([(3, 12, EventKind.CLICK)])
    assert not view.copy().frozen

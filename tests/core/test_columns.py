"""Event columns: the form batches travel in from the parser to the journal."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstats.core import batch as batch_module
from shardstats.core.batch import parse_batch_columns
from shardstats.core.events import HOUR_MS, Event, EventColumns
from shardstats.core.validation import Limits
from tests.strategies import events

with_ids = st.builds(lambda e, eid: e._replace(id=eid), events(),
                     st.none() | st.sampled_from(["a", "b", "c"]))
NOW = 1_780_000_000_000


@given(st.lists(with_ids, max_size=40))
def test_columns_round_trip_events(evts: list[Event]) -> None:
    columns = EventColumns.of(evts)
    assert len(columns) == len(evts)
    assert columns.events() == evts
    assert (columns.ids is None) == all(e.id is None for e in evts)


@given(st.lists(st.lists(with_ids, max_size=10), min_size=1, max_size=5))
def test_concat_is_the_columns_of_all_the_parts(parts: list[list[Event]]) -> None:
    joined = EventColumns.concat([EventColumns.of(p) for p in parts])
    assert joined.events() == [e for p in parts for e in p]


@given(st.lists(with_ids, max_size=40))
def test_by_hour_partitions_in_order(evts: list[Event]) -> None:
    groups = EventColumns.of(evts).by_hour()
    assert sorted(groups) == sorted({e.timestamp_ms // HOUR_MS for e in evts})
    for hour, group in groups.items():
        assert group.events() == [e for e in evts if e.timestamp_ms // HOUR_MS == hour]


def test_unequal_columns_are_refused() -> None:
    with pytest.raises(ValueError):
        EventColumns([1, 2], ["a"], [1, 1])


def _line(user: str, event: str = "click", **extra: object) -> bytes:
    return json.dumps({"timestamp": NOW, "user": user, "event": event, **extra}).encode()


@pytest.mark.parametrize("body", [
    b"\n".join([_line("a"), _line("b", "impression")]),
    b"\n".join([_line("a"), _line("b")]) + b"\n",
    b"\r\n".join([_line("a"), _line("b", id="x-1")]) + b"\r\n",
])
def test_valid_batches_take_the_fast_path(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: object) -> object:
        raise AssertionError("the per-line rules ran for an all-valid batch")

    monkeypatch.setattr(batch_module, "_decode_all", slow)
    parsed = parse_batch_columns(body, NOW, Limits())
    assert parsed.errors == []
    assert list(parsed.event_lines) == [1, 2]
    assert [e.user for e in parsed.events] == ["a", "b"]


@pytest.mark.parametrize("body, lines, errors", [
    # blank and whitespace-only lines get no verdict, and do not shift line numbers
    (_line("a") + b"\n\n" + _line("b"), [1, 3], []),
    (_line("a") + b"\n  \n" + _line("b") + b"\n\n", [1, 3], []),
    # one bad line anywhere: the others are still accepted, each error names its line
    (_line("a") + b"\n" + _line("") + b"\n" + _line("c"), [1, 3], [2]),
    (_line("a") + b"\n" + _line("b\x01") + b"\n" + _line("c"), [1, 3], [2]),
    (_line("a") + b"\n" + _line("b", id="") + b"\n" + _line("c"), [1, 3], [2]),
    (_line("a") + b"\n" + _line("x" * 300), [1], [2]),
    (b"{}\n" + _line("a"), [2], [1]),
])
def test_unusual_batches_get_per_line_verdicts(
    body: bytes, lines: list[int], errors: list[int]
) -> None:
    parsed = parse_batch_columns(body, NOW, Limits())
    assert list(parsed.event_lines) == lines
    assert [number for number, _ in parsed.errors] == errors
    assert len(parsed.columns) == len(lines)

"""Event columns: the form batches travel in from the parser to the journal."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
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

    monkeypatch.setattr(batch_module, "_event", slow)
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


def _valid_line(user: str, kind: str, eid: str | None, ts: int) -> bytes:
    item: dict[str, object] = {"timestamp": ts, "user": user, "event": kind}
    if eid is not None:
        item["id"] = eid
    return json.dumps(item, separators=(",", ":")).encode()


valid_json_lines = st.builds(
    _valid_line,
    st.sampled_from(["a", "bob", "é", "x" * 300, "", "a,b", "q\"uote"]),
    st.sampled_from(["click", "impression", "view"]),
    st.none() | st.sampled_from(["e1", "", "é"]),
    st.sampled_from([NOW, NOW - 1, 0, NOW + 10**9, NOW - 40 * 86_400_000]),
)


@st.composite
def batch_bodies(draw: st.DrawFn) -> bytes:
    """Mostly valid lines, mixed with the shapes that could fool a whole-batch decoder: a
    line cut in two, two objects on one line, blank lines, extra keys, garbage."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        line = draw(valid_json_lines)
        shape = draw(st.sampled_from(["plain"] * 4 + ["split", "pair", "blank", "extra",
                                                        "garbage", "crlf"]))
        if shape == "split":
            cut = draw(st.integers(1, len(line) - 1))
            lines += [line[:cut], line[cut:]]
        elif shape == "pair":
            lines.append(line + b"," + draw(valid_json_lines))
        elif shape == "blank":
            lines += [line, draw(st.sampled_from([b"", b"  ", b"\r"]))]
        elif shape == "extra":
            lines.append(line[:-1] + b',"x":[1,2]}')
        elif shape == "garbage":
            lines.append(draw(st.binary(max_size=12)).replace(b"\n", b""))
        elif shape == "crlf":
            lines.append(line + b"\r")
        else:
            lines.append(line)
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


_A = _valid_line("a", "click", None, NOW)


@example(_A[:20] + b"\n" + _A[20:] + b"\n" + _A + b"," + _A)  # a cut line, a doubled line
@example(_A[:-1] + b',"x":"\n"},' + _A)  # one value across two lines through a string
@given(batch_bodies() | st.binary(max_size=300))
def test_every_line_gets_the_verdict_it_gets_alone(body: bytes) -> None:
    """Whatever path the batch takes, line n's verdict is the per-line rules' verdict."""
    from shardstats.core.batch import _event
    from shardstats.errors import InvalidInput

    expected: list[tuple[int, Event | None, str | None]] = []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            expected.append((number, _event(raw, NOW, Limits()), None))
        except InvalidInput as exc:
            expected.append((number, None, str(exc)))
    assert [tuple(line) for line in parse_batch_columns(body, NOW, Limits()).lines()] == expected


@pytest.mark.parametrize("timestamp", [-5, 2**63])
def test_windows_wider_than_time_itself_still_refuse_impossible_timestamps(
    timestamp: int,
) -> None:
    wide = Limits(accept_past_ms=10 * NOW, accept_future_ms=2**64)
    body = _line("a") + b"\n" + json.dumps(
        {"timestamp": timestamp, "user": "b", "event": "click"}).encode()
    parsed = parse_batch_columns(body, NOW, wide)
    assert list(parsed.event_lines) == [1] and [n for n, _ in parsed.errors] == [2]

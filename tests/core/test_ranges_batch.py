"""Pure parts of range queries and batch parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstats.core.batch import parse_batch
from shardstats.core.events import HOUR_MS, Event, EventKind
from shardstats.core.ranges import RangeQuery, range_from_query
from shardstats.core.validation import Limits, event_from_query
from shardstats.errors import InvalidInput

NOW = 1_780_000_000_000


@given(st.integers(0, 10_000), st.integers(0, 200), st.sampled_from(["hour", "day"]))
def test_segments_tile_the_range(first: int, length: int, step: str) -> None:
    query = RangeQuery(first, first + length, step)
    segments = query.segments()
    assert [h for s in segments for h in s] == list(query.hours)
    if step == "day":
        assert all(s[0] // 24 == s[-1] // 24 for s in segments)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"to=5", "missing parameter 'from'"),
        (b"from=5", "missing parameter 'to'"),
        (b"from=9&to=5", "before"),
        (b"from=0&to=5&step=week", "step"),
        (b"from=-1&to=5", "digits only"),
        (b"from=0&to=5&from=1", "more than once"),
        (f"from=0&to={800 * HOUR_MS}".encode(), "maximum is 768"),
    ],
)
def test_range_validation(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        range_from_query(raw, 768)


def test_range_bounds_are_whole_hours() -> None:
    query = range_from_query(f"from={HOUR_MS + 5}&to={3 * HOUR_MS - 1}".encode(), 768)
    assert (query.first_hour, query.last_hour, query.step) == (1, 2, "hour")


lines = st.fixed_dictionaries(
    {
        "timestamp": st.integers(NOW - 10**10, NOW + 10**6) | st.text(max_size=5),
        "user": st.text(max_size=6) | st.integers(),
        "event": st.sampled_from(["click", "impression", "Click", ""]),
    }
)


@given(st.lists(lines, max_size=30))
def test_batch_lines_are_judged_exactly_like_single_posts(items: list[dict[str, object]]) -> None:
    """The fast path must agree with the single-POST rules on every line."""
    body = "\n".join(json.dumps(item) for item in items).encode()
    verdicts = parse_batch(body, NOW, Limits())
    assert [v.line for v in verdicts] == list(range(1, len(items) + 1))
    for item, verdict in zip(items, verdicts, strict=True):
        try:
            from urllib.parse import urlencode

            single: Event | None = event_from_query(urlencode(item).encode(), NOW, Limits())
        except InvalidInput:
            single = None
        if isinstance(item["user"], int):
            single = None  # JSON users must be strings, though a query string cannot tell
        assert verdict.event == single, (item, verdict)


def test_batch_verdicts_name_the_problem() -> None:
    body = b'{"timestamp": 5}\n\n[]\n{"timestamp": true, "user": "a", "event": "click"}\n{'
    verdicts = parse_batch(body, NOW, Limits(accept_past_ms=0))
    assert [(v.line, v.error) for v in verdicts] == [
        (1, "missing parameter 'user'"),
        (3, "each line must be a JSON object"),
        (4, "'timestamp' must be a string or an integer"),
        (5, "not valid JSON"),
    ]
    ok = parse_batch(f'{{"timestamp": "{NOW}", "user": "é", "event": "impression"}}'.encode(),
                     NOW, Limits())
    assert ok[0].event == Event(NOW, "é", EventKind.IMPRESSION)


valid_lines = st.fixed_dictionaries(
    {
        "timestamp": st.integers(NOW - 30 * 24 * HOUR_MS, NOW + 600_000),
        "user": st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                        min_size=1, max_size=8) | st.sampled_from(["é", "ü" * 200]),
        "event": st.sampled_from(["click", "impression"]),
    },
    optional={"id": st.text(alphabet="abc-123", min_size=1, max_size=5)},
)


@given(st.lists(valid_lines, min_size=1, max_size=30))
def test_all_valid_batches_take_the_fast_path_with_the_same_verdicts(
    items: list[dict[str, object]],
) -> None:
    from urllib.parse import urlencode

    from shardstats.core.batch import parse_batch_columns

    body = "\n".join(json.dumps(item) for item in items).encode()
    parsed = parse_batch_columns(body, NOW, Limits())
    singles: list[Event | None] = []
    for item in items:
        try:
            singles.append(event_from_query(urlencode(item).encode(), NOW, Limits()))
        except InvalidInput:
            singles.append(None)
    accepted = [e for e in singles if e is not None]
    assert parsed.events == accepted
    assert len(parsed.errors) == singles.count(None)


def test_lone_surrogates_are_rejected_not_crashed() -> None:
    body = (b'{"timestamp": %d, "user": "a\\ud800", "event": "click"}\n'
            b'{"timestamp": %d, "user": "b", "event": "click", "id": "\\udfff"}' % (NOW, NOW))
    verdicts = parse_batch(body, NOW, Limits())
    assert [v.error for v in verdicts] == ["user is not valid Unicode", "id is not valid Unicode"]


# Raw (unescaped) text in the body: UTF-8 bytes, DEL, C1 controls, or escapes of either; the
# fast path takes a window of plain ASCII without checking users character by character.
raw_text = st.text(alphabet="ab\x7f\x85é\x1f\\\"", max_size=6)
raw_lines = st.fixed_dictionaries(
    {
        "timestamp": st.integers(NOW - 10**6, NOW),
        "user": raw_text,
        "event": st.sampled_from(["click", "impression"]),
    },
    optional={"id": raw_text},
)


@given(st.lists(raw_lines, min_size=1, max_size=30), st.booleans())
def test_raw_and_escaped_text_is_judged_exactly_like_single_posts(
    items: list[dict[str, object]], ensure_ascii: bool,
) -> None:
    from urllib.parse import urlencode

    body = "\n".join(json.dumps(item, ensure_ascii=ensure_ascii) for item in items).encode()
    verdicts = parse_batch(body, NOW, Limits())
    for item, verdict in zip(items, verdicts, strict=True):
        try:
            single: Event | None = event_from_query(urlencode(item).encode(), NOW, Limits())
        except InvalidInput:
            single = None
        assert verdict.event == single, (item, verdict)

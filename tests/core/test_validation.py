"""Pure validation rules (the HTTP tests cover the same rules through the app)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstats.core.events import HOUR_MS, Event, EventKind, hour_of
from shardstats.core.validation import (
    Limits,
    event_from_query,
    parse_query,
    timestamp_from_query,
)
from shardstats.errors import Field, InvalidInput, Reason

NOW = 1_780_000_000_000
LIMITS = Limits()


def post(query: str, now: int = NOW, limits: Limits = LIMITS) -> Event:
    return event_from_query(query.encode(), now, limits)


def test_valid_event() -> None:
    assert post(f"timestamp={NOW}&user=alice&event=click") == Event(NOW, "alice", EventKind.CLICK)


@pytest.mark.parametrize(
    "query, reason",
    [
        ("user=a&event=click", "missing parameter 'timestamp'"),
        ("timestamp=&user=a&event=click", "empty"),
        ("timestamp=-1&user=a&event=click", "digits only"),
        ("timestamp=1e3&user=a&event=click", "digits only"),
        ("timestamp=1.0&user=a&event=click", "digits only"),
        ("timestamp=%D9%A1&user=a&event=click", "digits only"),
        ("timestamp=9223372036854775808&user=a&event=click", "maximum"),
        ("timestamp=" + "9" * 5000 + "&user=a&event=click", "maximum"),
        (f"timestamp={NOW}&event=click", "missing parameter 'user'"),
        (f"timestamp={NOW}&user=&event=click", "'user' is empty"),
        (f"timestamp={NOW}&user=a%00b&event=click", "control character"),
        (f"timestamp={NOW}&user=a%C2%85&event=click", "control character"),
        (f"timestamp={NOW}&user=%FF&event=click", "not valid UTF-8"),
        (f"timestamp={NOW}&user=a", "missing parameter 'event'"),
        (f"timestamp={NOW}&user=a&event=Click", "'click' or 'impression'"),
        (f"timestamp={NOW}&user=a&event=click&user=b", "more than once"),
        (f"timestamp={NOW - 31 * 24 * HOUR_MS}&user=a&event=click", "in the past"),
        (f"timestamp={NOW + 11 * 60_000}&user=a&event=click", "in the future"),
    ],
)
def test_invalid_posts_say_why(query: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        post(query)


def test_user_length_is_counted_in_utf8_bytes() -> None:
    limits = Limits(max_user_bytes=4)
    assert post(f"timestamp={NOW}&user=%C3%A9%C3%A9&event=click", limits=limits).user == "éé"
    with pytest.raises(InvalidInput, match="5 bytes"):
        post(f"timestamp={NOW}&user=%C3%A9%C3%A9a&event=click", limits=limits)


def test_window_bounds_can_be_disabled() -> None:
    limits = Limits(accept_past_ms=0, accept_future_ms=0)
    assert post("timestamp=0&user=a&event=click", limits=limits).timestamp_ms == 0
    big = 2**63 - 1
    assert post(f"timestamp={big}&user=a&event=impression", limits=limits).timestamp_ms == big


def test_unknown_parameters_ignored_and_plus_is_space() -> None:
    event = post(f"x=1&x=2&timestamp={NOW}&user=a+b&event=click&&junk")
    assert event.user == "a b"
    assert post(f"timestamp={NOW}&user=a%20b&event=click").user == "a b"


def test_leading_zeros_are_digits() -> None:
    assert timestamp_from_query(b"timestamp=0007") == 7


@given(st.integers(0, 2**63 - 1))
def test_hours_are_floor_division(ts: int) -> None:
    assert timestamp_from_query(f"timestamp={ts}".encode()) == ts
    assert hour_of(ts) * HOUR_MS <= ts < (hour_of(ts) + 1) * HOUR_MS


@given(st.binary(max_size=300))
def test_parse_query_only_ever_raises_invalid_input(raw: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        parse_query(raw)


@given(st.lists(st.sampled_from(["timestamp=", f"timestamp={NOW}", "timestamp=1", "user=",
                                 "user=a", "user=%ff", "user=%00", "event=click", "event=x",
                                 "id=", "id=r", "timestamp=9e9"]), max_size=5))
def test_every_rejection_names_the_parameter_it_is_about(parts: list[str]) -> None:
    """A rejected POST's problem is a parameter's, never the operator commands' fallback."""
    try:
        post("&".join(parts))
    except InvalidInput as exc:
        assert exc.problem.field in {Field.TIMESTAMP, Field.USER, Field.EVENT, Field.ID}
        assert exc.problem.reason is not Reason.INVALID
        repeated = {p.partition("=")[0] for p in parts if sum(
            q.partition("=")[0] == p.partition("=")[0] for q in parts) > 1}
        if exc.problem.reason is Reason.REPEATED:
            assert exc.problem.field in repeated


def test_optional_event_id() -> None:
    assert post(f"timestamp={NOW}&user=a&event=click").id is None
    assert post(f"timestamp={NOW}&user=a&event=click&id=retry-1").id == "retry-1"
    for query, reason in [
        (f"timestamp={NOW}&user=a&event=click&id=", "'id' is empty"),
        (f"timestamp={NOW}&user=a&event=click&id=" + "x" * 129, "longer than 128"),
        (f"timestamp={NOW}&user=a&event=click&id=a%0Ab", "control character"),
        (f"timestamp={NOW}&user=a&event=click&id=1&id=2", "more than once"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            post(query)

"""The HTTP contract of ``/analytics`` (README "API"): POST answers 204 once durable, 400 on
invalid input (reason in a header, empty body), 503 with Retry-After when overloaded or not
ready; GET answers the hour's counts as JSON; other methods 405, unknown paths 404; nothing a
client sends gives a 500. Driven through the app the server runs, with the lifespan running;
every request names its exact query-string bytes (see ``conftest.Harness.request``).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core.events import HOUR_MS
from shardstats.core.validation import MAX_QUERY_BYTES
from shardstats.errors import Field, Reason
from shardstats.http.app import create_app
from shardstats.shards.service import Service
from shardstats.storage.journal import Journal

from .conftest import NOW_MS, Client, Harness, K, raw_asgi, running_app, wait_healthy

ZERO = {"unique_users": 0, "clicks": 0, "impressions": 0}
MAX_TS = 2**63 - 1
DAY_MS = 24 * HOUR_MS
PAST_BOUND = NOW_MS - 30 * DAY_MS  # oldest POST timestamp accepted by default
FUTURE_BOUND = NOW_MS + 10 * 60_000  # newest POST timestamp accepted by default


def valid(**parts: str) -> str:
    """A valid POST query string with some parts replaced (``None``-free, raw text)."""
    values = {"timestamp": str(NOW_MS), "user": "alice", "event": "click", **parts}
    return "&".join(f"{k}={v}" for k, v in values.items())


def journal_files(h: Harness) -> list[str]:
    return sorted(p.name for p in (h.data_dir / "journals").iterdir())


def snapshot_files(h: Harness) -> list[str]:
    return sorted(p.name for p in (h.data_dir / "snapshots").iterdir())


async def assert_post_400(h: Harness, query: str | bytes) -> str:
    response = await h.post(query)
    assert response.status_code == 400, (query, response.status_code)
    assert await response.get_data() == b""
    reason = response.headers.get("X-Shardstats-Error")
    assert isinstance(reason, str)
    assert reason, "a POST 400 names its reason in X-Shardstats-Error"
    # ... and its problem as codes from fixed sets.
    Field(response.headers["X-Shardstats-Error-Field"])
    Reason(response.headers["X-Shardstats-Error-Reason"])
    return reason


async def assert_get_400(h: Harness, query: str | bytes) -> str:
    response = await h.get(query)
    assert response.status_code == 400, (query, response.status_code)
    assert response.mimetype == "application/json"
    body = json.loads(await response.get_data())
    assert list(body) == ["error", "field", "reason"]
    assert isinstance(body["error"], str)
    assert body["error"]
    Field(body["field"])
    Reason(body["reason"])
    return body["error"]


async def poll(predicate: Callable[[], bool]) -> None:
    """Bounded polling of state that another thread or task changes without an event."""
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await trio.sleep(0.001)


# -- the happy path --------------------------------------------------------------------------


async def test_post_answers_204_with_empty_body(harness: Harness) -> None:
    response = await harness.post(valid())
    assert response.status_code == 204
    assert await response.get_data() == b""


async def test_post_204_on_the_wire_has_no_body_content_type_or_length(harness: Harness) -> None:
    response = await raw_asgi(harness.app, "POST", "/analytics", valid().encode())
    assert response.status_code == 204
    assert response.body == b""
    assert "content-type" not in response.header_names()
    assert "content-length" not in response.header_names()


async def test_post_400_on_the_wire_has_reason_header_and_no_body(harness: Harness) -> None:
    response = await raw_asgi(harness.app, "POST", "/analytics", valid(event="nope").encode())
    assert response.status_code == 400
    assert response.body == b""
    assert response.headers["X-Shardstats-Error"] == "event must be 'click' or 'impression'"
    assert "content-type" not in response.header_names()


async def test_get_on_the_wire_is_json_with_a_correct_length(harness: Harness) -> None:
    await harness.event(NOW_MS, "alice", "impression")
    for query, status in ((f"timestamp={NOW_MS}", 200), ("timestamp=x", 400)):
        response = await raw_asgi(harness.app, "GET", "/analytics", query.encode())
        assert response.status_code == status
        assert response.mimetype == "application/json"
        assert int(response.headers["Content-Length"]) == len(response.body)
        json.loads(response.body)


async def test_raw_path_query_string_is_passed_through(harness: Harness) -> None:
    # The client's path form keeps percent-escapes as they are, like a real client would.
    response = await harness.client.post(f"/analytics?timestamp={NOW_MS}&user=a%2Bb&event=click")
    assert response.status_code == 204
    response = await harness.client.post(f"/analytics?timestamp={NOW_MS}&user=%ff&event=click")
    assert response.status_code == 400
    response = await harness.client.get(f"/analytics?timestamp={NOW_MS}")
    assert json.loads(await response.get_data()) == {
        "unique_users": 1,
        "clicks": 1,
        "impressions": 0,
    }


async def test_get_answers_json_counts(harness: Harness) -> None:
    await harness.event(NOW_MS, "alice", "click")
    response = await harness.get(f"timestamp={NOW_MS}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(await response.get_data())
    assert body == {"unique_users": 1, "clicks": 1, "impressions": 0}
    assert all(type(value) is int for value in body.values())


async def test_read_your_writes(harness: Harness) -> None:
    for i in range(1, 6):
        await harness.event(NOW_MS - i, f"user{i}", "impression")
        assert await harness.counts(NOW_MS) == {
            "unique_users": i,
            "clicks": 0,
            "impressions": i,
        }


async def test_unique_users_are_distinct_across_clicks_and_impressions(harness: Harness) -> None:
    for user, kind in [
        ("alice", "click"),
        ("alice", "impression"),
        ("alice", "click"),
        ("bob", "impression"),
        ("bob", "impression"),
        ("carol", "click"),
    ]:
        await harness.event(NOW_MS, user, kind)
    assert await harness.counts(NOW_MS) == {"unique_users": 3, "clicks": 3, "impressions": 3}


async def test_same_user_in_two_hours_counts_in_each(harness: Harness) -> None:
    await harness.event(NOW_MS, "alice", "click")
    await harness.event(NOW_MS - HOUR_MS, "alice", "click")
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}
    assert await harness.counts(NOW_MS - HOUR_MS) == {
        "unique_users": 1,
        "clicks": 1,
        "impressions": 0,
    }


async def test_hour_boundaries(harness: Harness) -> None:
    start = K * HOUR_MS
    await harness.event(start - 1, "last-of-previous", "click")
    await harness.event(start, "first-of-hour", "click")
    await harness.event(start + HOUR_MS - 1, "last-of-hour", "impression")
    await harness.event(start + HOUR_MS, "first-of-next", "impression")

    one_click = {"unique_users": 1, "clicks": 1, "impressions": 0}
    one_impression = {"unique_users": 1, "clicks": 0, "impressions": 1}
    # Any timestamp inside an hour reads that hour.
    for ts in (start - HOUR_MS, start - 1):
        assert await harness.counts(ts) == one_click
    for ts in (start, start + 1_234_567, start + HOUR_MS - 1):
        assert await harness.counts(ts) == {"unique_users": 2, "clicks": 1, "impressions": 1}
    for ts in (start + HOUR_MS, start + 2 * HOUR_MS - 1):
        assert await harness.counts(ts) == one_impression
    assert await harness.counts(start + 2 * HOUR_MS) == ZERO


async def test_unwritten_hours_answer_zeros_and_create_no_files(harness: Harness) -> None:
    await harness.event(NOW_MS, "alice", "click")
    journals, snapshots = journal_files(harness), snapshot_files(harness)
    assert f"{K}.sqlite" in journals
    assert all(name.startswith(f"{K}.") for name in journals)
    for ts in (
        0,
        1,
        NOW_MS - HOUR_MS,
        NOW_MS - 400 * DAY_MS,
        NOW_MS + HOUR_MS,
        NOW_MS + 1000 * DAY_MS,
        MAX_TS,
    ):
        assert await harness.counts(ts) == ZERO, ts
        assert await harness.counts(ts) == ZERO, ts  # a second read must not differ either
    assert journal_files(harness) == journals
    assert snapshot_files(harness) == snapshots


async def test_get_on_a_fresh_data_dir_creates_no_journal(harness: Harness) -> None:
    assert await harness.counts(NOW_MS) == ZERO
    assert journal_files(harness) == []


async def test_counts_survive_a_restart(tmp_path: Path) -> None:
    async with running_app(tmp_path) as h:
        await h.event(NOW_MS, "alice", "click")
        await h.event(NOW_MS, "bob", "impression")
        await h.event(NOW_MS - 3 * HOUR_MS, "alice", "impression")
    async with running_app(tmp_path) as h:
        assert await h.counts(NOW_MS) == {"unique_users": 2, "clicks": 1, "impressions": 1}
        assert await h.counts(NOW_MS - 3 * HOUR_MS) == {
            "unique_users": 1,
            "clicks": 0,
            "impressions": 1,
        }
        await h.event(NOW_MS, "alice", "impression")
        assert await h.counts(NOW_MS) == {"unique_users": 2, "clicks": 1, "impressions": 2}


async def test_concurrent_posts_are_all_acknowledged_and_counted(harness: Harness) -> None:
    statuses: list[int] = []

    async def post(i: int) -> None:
        response = await harness.post(valid(user=f"u{i % 40}", event="click"))
        statuses.append(response.status_code)

    async with trio.open_nursery() as nursery:
        for i in range(120):
            nursery.start_soon(post, i)
    assert statuses == [204] * 120
    assert await harness.counts(NOW_MS) == {"unique_users": 40, "clicks": 120, "impressions": 0}


# -- query-string decoding -------------------------------------------------------------------


async def test_plus_and_percent_20_both_decode_to_a_space(harness: Harness) -> None:
    await harness.event(NOW_MS, "john+smith", "click")
    await harness.event(NOW_MS, "john%20smith", "click")
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 2, "impressions": 0}
    await harness.event(NOW_MS, "john%2bsmith", "click")  # a literal plus: another user
    assert await harness.counts(NOW_MS) == {"unique_users": 2, "clicks": 3, "impressions": 0}
    await harness.event(NOW_MS, "+john+smith+", "click")  # leading/trailing spaces are kept
    assert await harness.counts(NOW_MS) == {"unique_users": 3, "clicks": 4, "impressions": 0}


async def test_percent_encoded_utf8_user_and_case_of_escapes(harness: Harness) -> None:
    await harness.event(NOW_MS, "%C3%A9l%C3%A8ve", "click")  # "élève"
    await harness.event(NOW_MS, "%c3%a9l%c3%a8ve", "click")  # same bytes, lower-case hex
    await harness.event(NOW_MS, quote("élève"), "impression")
    await harness.event(NOW_MS, "%F0%9F%98%80", "click")  # an emoji, 4 bytes
    assert await harness.counts(NOW_MS) == {"unique_users": 2, "clicks": 3, "impressions": 1}


async def test_user_is_opaque_not_numeric(harness: Harness) -> None:
    for user in ("1", "01", "001", "1.0", "%201"):
        await harness.event(NOW_MS, user, "click")
    assert await harness.counts(NOW_MS) == {"unique_users": 5, "clicks": 5, "impressions": 0}


async def test_percent_encoded_parameter_names_are_decoded(harness: Harness) -> None:
    response = await harness.post(f"%74imestamp={NOW_MS}&%75ser=alice&%65vent=click")
    assert response.status_code == 204
    assert (await harness.counts(NOW_MS))["clicks"] == 1
    response = await harness.get(f"%74imestamp={NOW_MS}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        "foo=bar",
        "foo",
        "=",
        "=value",
        "&&",
        "x=%ff",  # an unknown parameter's value is not decoded, so it cannot be invalid
        "Timestamp=1",  # names are case-sensitive: this one is unknown
        "user_=x&event_=y",
        "foo=1&foo=2",  # repeating an unknown parameter is fine
    ],
)
async def test_unknown_parameters_are_ignored(harness: Harness, extra: str) -> None:
    assert (await harness.post(f"{extra}&{valid()}&{extra}")).status_code == 204
    assert (await harness.get(f"{extra}&timestamp={NOW_MS}&{extra}")).status_code == 200
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}


async def test_unknown_parameter_with_undecodable_name_is_ignored(harness: Harness) -> None:
    # No known name fails to decode, so such a parameter is unknown, and ignored.
    assert (await harness.post(f"%ff=1&{valid()}&%C3=x")).status_code == 204
    assert (await harness.get(f"%ff=1&timestamp={NOW_MS}&%C3")).status_code == 200
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}


# -- accepted edge values --------------------------------------------------------------------


async def test_leading_zeros_in_timestamp_are_accepted(harness: Harness) -> None:
    padded = "0" * 40 + str(NOW_MS)
    assert (await harness.post(valid(timestamp=padded))).status_code == 204
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}
    response = await harness.get(f"timestamp={padded}")
    assert json.loads(await response.get_data())["clicks"] == 1
    response = await harness.get("timestamp=" + "0" * 5000)
    assert response.status_code == 200
    assert json.loads(await response.get_data()) == ZERO


async def test_get_accepts_any_timestamp_in_range(harness: Harness) -> None:
    # The acceptance window applies to POST only.
    for ts in ("0", str(MAX_TS), "0" + str(MAX_TS)):
        response = await harness.get(f"timestamp={ts}")
        assert response.status_code == 200, ts
        assert json.loads(await response.get_data()) == ZERO


async def test_user_length_limit_counts_bytes_not_characters(make_harness: Any) -> None:
    async with make_harness(max_user_bytes=4) as h:
        assert (await h.post(valid(user="abcd"))).status_code == 204
        assert (await h.post(valid(user="ab%C3%A9"))).status_code == 204  # 3 chars, 4 bytes
        await assert_post_400(h, valid(user="abcde"))
        reason = await assert_post_400(h, valid(user="abc%C3%A9"))  # 4 chars, 5 bytes
        assert "5 bytes" in reason
        await assert_post_400(h, valid(user="%F0%9F%98%80a"))  # 2 chars, 5 bytes
        assert await h.counts(NOW_MS) == {"unique_users": 2, "clicks": 2, "impressions": 0}


async def test_default_user_limit_is_256_bytes(harness: Harness) -> None:
    assert (await harness.post(valid(user="%C3%A9" * 128))).status_code == 204
    assert (await harness.post(valid(user="x" * 256))).status_code == 204
    await assert_post_400(harness, valid(user="%C3%A9" * 128 + "x"))
    await assert_post_400(harness, valid(user="x" * 257))


async def test_configured_user_limit_is_reachable_with_percent_encoding(
    make_harness: Any,
) -> None:
    # 8000 bytes of user, every byte percent-encoded: a 24 KB query string.
    async with make_harness(max_user_bytes=8000) as h:
        assert (await h.post(valid(user="%C3%A9" * 4000))).status_code == 204
        await assert_post_400(h, valid(user="%C3%A9" * 4000 + "x"))
        assert (await h.counts(NOW_MS))["unique_users"] == 1


async def test_window_bounds_are_inclusive(harness: Harness) -> None:
    assert (await harness.post(valid(timestamp=str(PAST_BOUND), user="old"))).status_code == 204
    assert (await harness.post(valid(timestamp=str(FUTURE_BOUND), user="new"))).status_code == 204
    past = await assert_post_400(harness, valid(timestamp=str(PAST_BOUND - 1)))
    assert "past" in past
    future = await assert_post_400(harness, valid(timestamp=str(FUTURE_BOUND + 1)))
    assert "future" in future
    assert (await harness.counts(PAST_BOUND))["clicks"] == 1
    assert (await harness.counts(FUTURE_BOUND))["clicks"] == 1


async def test_window_follows_the_clock(harness: Harness) -> None:
    ts = NOW_MS + HOUR_MS
    await assert_post_400(harness, valid(timestamp=str(ts)))
    harness.clock.value = ts
    assert (await harness.post(valid(timestamp=str(ts)))).status_code == 204
    harness.clock.value = ts + 30 * DAY_MS + 1
    await assert_post_400(harness, valid(timestamp=str(ts)))


async def test_window_is_configurable(make_harness: Any) -> None:
    async with make_harness(accept_past_seconds=3600, accept_future_seconds=1) as h:
        assert (await h.post(valid(timestamp=str(NOW_MS - HOUR_MS)))).status_code == 204
        assert (await h.post(valid(timestamp=str(NOW_MS + 1000)))).status_code == 204
        await assert_post_400(h, valid(timestamp=str(NOW_MS - HOUR_MS - 1)))
        await assert_post_400(h, valid(timestamp=str(NOW_MS + 1001)))


async def test_past_bound_disabled_with_zero(make_harness: Any) -> None:
    async with make_harness(accept_past_seconds=0) as h:
        assert (await h.post(valid(timestamp="0"))).status_code == 204
        assert (await h.post(valid(timestamp=str(NOW_MS - 4000 * DAY_MS)))).status_code == 204
        await assert_post_400(h, valid(timestamp=str(FUTURE_BOUND + 1)))  # the other side holds
        assert await h.counts(0) == {"unique_users": 1, "clicks": 1, "impressions": 0}


async def test_future_bound_disabled_with_zero(make_harness: Any) -> None:
    async with make_harness(accept_future_seconds=0) as h:
        assert (await h.post(valid(timestamp=str(MAX_TS)))).status_code == 204
        assert (await h.post(valid(timestamp=str(NOW_MS + 400 * DAY_MS)))).status_code == 204
        await assert_post_400(h, valid(timestamp=str(PAST_BOUND - 1)))  # the other side holds
        assert await h.counts(MAX_TS) == {"unique_users": 1, "clicks": 1, "impressions": 0}


# -- every way a POST is a 400 ---------------------------------------------------------------

BAD_TIMESTAMPS = {
    "empty": "",
    "letters": "abc",
    "trailing letter": f"{NOW_MS}a",
    "hex": "0x10",
    "negative": f"-{NOW_MS}",
    "explicit plus": f"%2B{NOW_MS}",
    "plus decodes to space": f"+{NOW_MS}",
    "leading space": f"%20{NOW_MS}",
    "trailing space": f"{NOW_MS}%20",
    "tab": f"{NOW_MS}%09",
    "decimal": f"{NOW_MS}.0",
    "decimal comma": f"{NOW_MS},0",
    "exponent": "1.7e12",
    "integer exponent": "17e11",
    "underscore": "1_700_000_000_000",
    "arabic-indic digits": "%D9%A1%D9%A2%D9%A3",
    "fullwidth digits": "%EF%BC%91%EF%BC%92",
    "superscript two": "%C2%B2",
    "2**63": str(2**63),
    "twenty nines": "9" * 20,
    "huge": "9" * 10_000,
    "huge after zeros": "0" * 100 + "9" * 100,
    "invalid utf-8": "%ff",
    "nul": "%00",
}


@pytest.mark.parametrize("bad", list(BAD_TIMESTAMPS.values()), ids=list(BAD_TIMESTAMPS))
async def test_post_rejects_bad_timestamp(harness: Harness, bad: str) -> None:
    await assert_post_400(harness, valid(timestamp=bad))
    assert journal_files(harness) == []


@pytest.mark.parametrize("bad", list(BAD_TIMESTAMPS.values()), ids=list(BAD_TIMESTAMPS))
async def test_get_rejects_bad_timestamp(harness: Harness, bad: str) -> None:
    await assert_get_400(harness, f"timestamp={bad}")


BAD_USERS = {
    "empty": "",
    "nul": "a%00b",
    "unit separator": "%1F",
    "newline": "a%0A",
    "carriage return": "a%0D",
    "tab": "%09a",
    "delete": "a%7F",
    "next line U+0085": "a%C2%85",
    "C1 U+009F": "%C2%9F",
    "lone continuation byte": "%80",
    "invalid byte ff": "%ff",
    "invalid byte FE": "a%FEb",
    "truncated sequence": "%C3",
    "overlong nul": "%C0%80",
    "encoded surrogate": "%ED%A0%80",
    "above U+10FFFF": "%F4%90%80%80",
    "too long": "x" * 257,
}


@pytest.mark.parametrize("bad", list(BAD_USERS.values()), ids=list(BAD_USERS))
async def test_post_rejects_bad_user(harness: Harness, bad: str) -> None:
    await assert_post_400(harness, valid(user=bad))
    assert journal_files(harness) == []


BAD_EVENTS = {
    "empty": "",
    "capitalised": "Click",
    "upper": "CLICK",
    "plural": "clicks",
    "plural impression": "impressions",
    "prefix": "imp",
    "trailing space": "click%20",
    "leading plus-space": "+click",
    "nul suffix": "click%00",
    "other": "view",
    "both": "click,impression",
    "invalid utf-8": "%ff",
}


@pytest.mark.parametrize("bad", list(BAD_EVENTS.values()), ids=list(BAD_EVENTS))
async def test_post_rejects_bad_event(harness: Harness, bad: str) -> None:
    await assert_post_400(harness, valid(event=bad))
    assert journal_files(harness) == []


BAD_SHAPES = {
    "no query": "",
    "missing timestamp": "user=alice&event=click",
    "missing user": f"timestamp={NOW_MS}&event=click",
    "missing event": f"timestamp={NOW_MS}&user=alice",
    "timestamp without '='": "timestamp&user=alice&event=click",
    "user without '='": f"timestamp={NOW_MS}&user&event=click",
    "repeated timestamp": f"{valid()}&timestamp={NOW_MS}",
    "repeated user": f"{valid()}&user=alice",
    "repeated user, other value": f"{valid()}&user=bob",
    "repeated event": f"{valid()}&event=impression",
    "repeated empty event": f"{valid()}&event=",
    "repeated via escape": f"{valid()}&%75ser=alice",
    "too old": valid(timestamp=str(PAST_BOUND - 1)),
    "too far ahead": valid(timestamp=str(FUTURE_BOUND + 1)),
    "epoch": valid(timestamp="0"),
    "max timestamp": valid(timestamp=str(MAX_TS)),
    "query too long": f"{valid()}&pad={'x' * MAX_QUERY_BYTES}",
}


@pytest.mark.parametrize("query", list(BAD_SHAPES.values()), ids=list(BAD_SHAPES))
async def test_post_rejects_bad_query(harness: Harness, query: str) -> None:
    await assert_post_400(harness, query)
    assert journal_files(harness) == []


async def test_post_400_reasons_name_the_problem(harness: Harness) -> None:
    async def reason(query: str) -> str:
        return (await assert_post_400(harness, query)).lower()

    assert "timestamp" in await reason("user=a&event=click")
    assert "user" in await reason(f"timestamp={NOW_MS}&event=click")
    assert "event" in await reason(f"timestamp={NOW_MS}&user=a")
    assert "timestamp" in await reason(valid(timestamp="x"))
    assert "control" in await reason(valid(user="a%00"))
    assert "utf-8" in await reason(valid(user="%ff"))
    assert "more than once" in await reason(f"{valid()}&event=click")


PROBLEMS = {
    # query: (field, reason) of the 400
    "": ("timestamp", "missing"),
    f"timestamp={NOW_MS}&event=click": ("user", "missing"),
    f"timestamp={NOW_MS}&user=a": ("event", "missing"),
    valid(timestamp=""): ("timestamp", "empty"),
    valid(user=""): ("user", "empty"),
    valid(timestamp="x"): ("timestamp", "malformed"),
    valid(timestamp=str(2**63)): ("timestamp", "too_large"),
    valid(timestamp=str(PAST_BOUND - 1)): ("timestamp", "too_old"),
    valid(timestamp=str(FUTURE_BOUND + 1)): ("timestamp", "too_new"),
    valid(user="x" * 257): ("user", "too_long"),
    valid(user="a%00"): ("user", "control_character"),
    valid(user="%ff"): ("user", "encoding"),
    valid(event="tap"): ("event", "unknown_value"),
    f"{valid()}&event=click": ("event", "repeated"),
    f"{valid()}&id=": ("id", "empty"),
    f"{valid()}&id={'i' * 129}": ("id", "too_long"),
    f"{valid()}&pad={'x' * MAX_QUERY_BYTES}": ("query", "too_long"),
}


async def test_a_post_400_gives_its_problem_as_codes(harness: Harness) -> None:
    for query, (field, reason) in PROBLEMS.items():
        response = await harness.post(query)
        assert response.status_code == 400
        got = (response.headers["X-Shardstats-Error-Field"],
               response.headers["X-Shardstats-Error-Reason"])
        assert got == (field, reason), (query[:80], response.headers["X-Shardstats-Error"])


@pytest.mark.parametrize("path, query, field, reason", [
    ("/analytics", "", "timestamp", "missing"),
    ("/analytics", "timestamp=1e3", "timestamp", "malformed"),
    ("/analytics", "timestamp=1&timestamp=2", "timestamp", "repeated"),
    ("/analytics/range", "from=1", "to", "missing"),
    ("/analytics/range", "from=2&to=1", "to", "out_of_order"),
    ("/analytics/range", f"from=0&to={NOW_MS}", "to", "too_large"),
    ("/analytics/range", "from=1&to=2&step=week", "step", "unknown_value"),
])
async def test_a_get_400_gives_its_problem_as_codes(
    harness: Harness, path: str, query: str, field: str, reason: str
) -> None:
    response = await harness.request("GET", query, path)
    assert response.status_code == 400
    body = await response.get_json()
    assert (body["field"], body["reason"]) == (field, reason), body["error"]


async def test_rejected_posts_change_nothing(harness: Harness) -> None:
    await harness.event(NOW_MS, "alice", "click")
    for query in [*BAD_SHAPES.values(), *(valid(event=e) for e in BAD_EVENTS.values())]:
        assert (await harness.post(query)).status_code == 400
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}


@pytest.mark.parametrize(
    "query",
    [
        "",
        "user=alice",
        "timestamp",
        f"timestamp={NOW_MS}&timestamp={NOW_MS}",
        f"timestamp={NOW_MS}&timestamp=",
        f"timestamp={NOW_MS}&%74imestamp=1",
        f"timestamp={NOW_MS}&pad={'x' * MAX_QUERY_BYTES}",
    ],
    ids=[
        "no query",
        "no timestamp",
        "no '='",
        "repeated",
        "repeated empty",
        "repeated escaped",
        "too long",
    ],
)
async def test_get_rejects_bad_query(harness: Harness, query: str) -> None:
    await assert_get_400(harness, query)


@pytest.mark.parametrize(
    "extra",
    [
        "user=alice&event=bogus",
        "user=a&user=b",
        "event=click&event=click",
        "event=%ff",
        "user=%C3",
        "user=",
        "user=%00",
    ],
)
async def test_get_ignores_post_only_parameters(harness: Harness, extra: str) -> None:
    # GET takes only 'timestamp': 'user' and 'event' are unknown parameters there.
    await harness.event(NOW_MS, "alice")
    response = await harness.get(f"{extra}&timestamp={NOW_MS}&{extra}")
    assert response.status_code == 200
    assert json.loads(await response.get_data()) == {
        "unique_users": 1,
        "clicks": 1,
        "impressions": 0,
    }


# -- methods and paths -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_on_analytics_are_405(harness: Harness, method: str) -> None:
    response = await harness.request(method, valid())
    assert response.status_code == 405
    allow = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allow
    assert not allow & {"PUT", "DELETE", "PATCH", "OPTIONS"}
    assert journal_files(harness) == []


async def test_head_on_analytics_is_a_get_without_its_body(harness: Harness) -> None:
    await harness.event(NOW_MS, "alice")
    for query, status in ((f"timestamp={NOW_MS}", 200), ("timestamp=x", 400)):
        get = await harness.get(query)
        head = await harness.request("HEAD", query)
        assert (head.status_code, head.body) == (status, b"")
        assert head.headers["Content-Length"] == str(len(get.body))
        assert head.mimetype == "application/json"


async def test_405_on_analytics_is_counted_under_its_method(harness: Harness) -> None:
    await harness.request("PUT", valid())
    await harness.request("BREW", valid())
    scrape = (await harness.client.get("/metrics")).body.decode()
    assert 'method="PUT",route="/analytics",status="405"' in scrape
    assert 'method="other",route="/analytics",status="405"' in scrape
    assert "BREW" not in scrape


@pytest.mark.parametrize(
    "path", ["/nope", "/analytic", "/analytics/", "/analytics/x", "/ANALYTICS", "/healthz/x"]
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unknown_paths_are_404(harness: Harness, path: str, method: str) -> None:
    response = await harness.request(method, valid(), path=path)
    assert response.status_code == 404
    assert journal_files(harness) == []


async def test_post_to_healthz_is_405(harness: Harness) -> None:
    response = await harness.request("POST", "", path="/healthz")
    assert response.status_code == 405


async def test_request_body_is_ignored(harness: Harness) -> None:
    response = await harness.request(
        "POST", valid(), body=b"timestamp=1&user=other&event=impression"
    )
    assert response.status_code == 204
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}


# -- readiness, overload, failure ------------------------------------------------------------


async def test_healthz_is_200_when_ready(harness: Harness) -> None:
    response = await harness.request("GET", "", path="/healthz")
    assert response.status_code == 200
    assert json.loads(await response.get_data()) == {"status": "ready"}


async def assert_503(response: Any, *, body: str | None) -> None:
    """A 503 with a Retry-After; ``body`` is the JSON key expected, or None for no body."""
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    if body is None:
        assert await response.get_data() == b""
    else:
        assert body in json.loads(await response.get_data())


async def test_503_with_retry_after_while_recovering(tmp_path: Path) -> None:
    release = trio.Event()
    entered = trio.Event()

    def blocking_service(settings: Settings, clock: FixedClock) -> Service:
        service = Service(settings, clock)

        async def slow_preload(hours: list[int]) -> None:
            entered.set()
            await release.wait()

        service.registry.preload = slow_preload  # type: ignore[method-assign]
        return service

    async with running_app(
        tmp_path, service_factory=blocking_service, wait=False
    ) as h:
        try:
            with trio.fail_after(10):
                await entered.wait()
            assert not h.service.ready
            await assert_503(await h.request("GET", "", path="/healthz"), body="status")
            await assert_503(await h.post(valid()), body=None)
            await assert_503(await h.get(f"timestamp={NOW_MS}"), body="error")
            # Validation still answers 400 first: bad input is bad whether or not we are ready.
            assert (await h.post(valid(event="nope"))).status_code == 400
            assert (await h.get("timestamp=x")).status_code == 400
        finally:
            release.set()
        await wait_healthy(h.client)
        assert (await h.post(valid())).status_code == 204
        assert (await h.counts(NOW_MS))["clicks"] == 1


async def test_503_when_service_never_started(tmp_path: Path) -> None:
    # No lifespan: the service is constructed but not running (ready is False).
    settings = Settings(data_dir=str(tmp_path))
    service = Service(settings, clock=FixedClock(NOW_MS))
    client = Client(create_app(settings, service))
    await assert_503(await client.get("/healthz"), body="status")
    await assert_503(await client.post(f"/analytics?{valid()}"), body=None)
    get = await client.get(f"/analytics?timestamp={NOW_MS}")
    await assert_503(get, body="error")
    assert "recovering" in (await get.get_json())["error"]


class BlockedJournal:
    """Makes ``Journal.append`` wait (in its worker thread) until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Journal.append

        def append(journal: Journal, events: Any, uids: Any, *rest: Any) -> Any:
            self.entered.set()
            if not self.release.wait(timeout=10):
                raise RuntimeError("the test never released the journal")
            return original(journal, events, uids, *rest)

        monkeypatch.setattr(Journal, "append", append)


async def test_503_with_retry_after_when_the_hour_inbox_is_full(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = BlockedJournal()
    results: dict[str, int] = {}

    async def post(user: str) -> None:
        results[user] = (await harness.post(valid(user=user))).status_code

    async with make_harness(inbox_size=1) as harness:
        blocked.patch(monkeypatch)
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(post, "a")  # taken by the shard, stuck in the journal
                await poll(blocked.entered.is_set)
                nursery.start_soon(post, "b")  # waits in the inbox (size 1)
                await poll(lambda: harness.service.registry.statistics().queued == 1)
                for user in ("c", "d"):
                    response = await harness.post(valid(user=user))
                    await assert_503(response, body=None)
                assert results == {}
                # Reads are not queued behind the stuck commit.
                assert await harness.counts(NOW_MS) == ZERO
            finally:
                blocked.release.set()
        assert results == {"a": 204, "b": 204}
        assert await harness.counts(NOW_MS) == {"unique_users": 2, "clicks": 2, "impressions": 0}
        assert (await harness.post(valid(user="c"))).status_code == 204


async def test_failed_commit_is_500_with_empty_body_and_not_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.event(NOW_MS, "alice", "click")

    def failing_append(journal: Journal, events: Any, uids: Any, *rest: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Journal, "append", failing_append)
    response = await harness.post(valid(user="bob"))
    assert response.status_code == 500
    assert await response.get_data() == b""
    assert await harness.counts(NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}
    monkeypatch.undo()
    assert (await harness.post(valid(user="carol"))).status_code == 204
    assert await harness.counts(NOW_MS) == {"unique_users": 2, "clicks": 2, "impressions": 0}


async def test_unexpected_error_in_get_is_500_without_details(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_query(hour: int) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(harness.service, "query", broken_query)
    response = await harness.get(f"timestamp={NOW_MS}")
    assert response.status_code == 500
    assert json.loads(await response.get_data()) == {"error": "internal error"}


async def test_unexpected_error_in_post_is_500_with_empty_body(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_submit(submitted: Any) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(harness.service, "submit", broken_submit)
    response = await harness.post(valid())
    assert response.status_code == 500
    assert await response.get_data() == b""


# -- properties ------------------------------------------------------------------------------

# What h11 lets through in a request target: visible ASCII (raw bytes >= 0x80 or whitespace are
# refused by hypercorn with its own 400 before the app runs).
VCHAR = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
RAW_PIECE = st.text(VCHAR.filter(lambda c: c not in "&="), max_size=12)


def percent(data: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in data)


KEYS = st.one_of(
    st.sampled_from(["timestamp", "user", "event"]),
    RAW_PIECE,
    st.binary(max_size=4).map(percent),
    st.sampled_from(["%74imestamp", "Timestamp", "user%00", "+user", "event+"]),
)
VALUES = st.one_of(
    st.integers(PAST_BOUND - HOUR_MS, FUTURE_BOUND + HOUR_MS).map(str),
    st.integers(0, 2**70).map(str),
    st.sampled_from(["click", "impression", "Click", "", "0", "-1", "1e3", "+1"]),
    RAW_PIECE,
    st.binary(max_size=16).map(percent),
    st.text(max_size=8).map(lambda s: quote(s, safe="")),
)
FIELDS = st.one_of(
    st.tuples(KEYS, VALUES).map("=".join),
    KEYS,
    st.tuples(KEYS, VALUES, VALUES).map("=".join),
)


@st.composite
def near_valid_queries(draw: st.DrawFn) -> str:
    """The three parameters, each mostly valid, maybe with extras, maybe shuffled."""

    def part(good: st.SearchStrategy[str]) -> str:
        value: str = draw(good if draw(st.integers(0, 3)) else VALUES)
        return value

    fields = [
        "timestamp=" + part(st.integers(NOW_MS - HOUR_MS, NOW_MS).map(str)),
        "user=" + part(st.text(min_size=1, max_size=8).map(lambda u: quote(u, safe=""))),
        "event=" + part(st.sampled_from(["click", "impression"])),
        *draw(st.lists(FIELDS, max_size=2)),
    ]
    if draw(st.booleans()):
        fields = draw(st.permutations(fields))
    return "&".join(fields)


QUERIES = st.one_of(
    near_valid_queries(),
    st.lists(FIELDS, max_size=6).map("&".join),
    st.text(VCHAR, max_size=40),
    st.binary(max_size=30).map(percent),
)

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(query=QUERIES)
async def test_any_query_string_gives_a_contract_status(
    tmp_path_factory: pytest.TempPathFactory, query: str
) -> None:
    data_dir = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    async with running_app(data_dir, max_open_shards=4) as h:
        post = await h.post(query)
        assert post.status_code in (204, 400), (query, post.status_code)
        assert await post.get_data() == b""
        reason = post.headers.get("X-Shardstats-Error")
        assert (reason is not None) == (post.status_code == 400)

        get = await h.get(query)
        assert get.status_code in (200, 400), (query, get.status_code)
        assert get.mimetype == "application/json"
        body = json.loads(await get.get_data())
        if get.status_code == 200:
            assert set(body) == {"unique_users", "clicks", "impressions"}
            assert all(type(v) is int and v >= 0 for v in body.values())
            # Read-your-writes: a valid POST's hour is the hour the same query GETs.
            assert body["clicks"] + body["impressions"] == (post.status_code == 204)
            assert body["unique_users"] == (post.status_code == 204)
        else:
            assert list(body) == ["error", "field", "reason"]
            assert isinstance(body["error"], str)
        event(f"POST {post.status_code}, GET {get.status_code}")


USERS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda u: len(u.encode()) <= 256
)
EVENTS = st.tuples(
    st.integers(NOW_MS - 3 * HOUR_MS, FUTURE_BOUND),
    st.integers(0, 5),  # index into the example's user pool
    st.sampled_from(["click", "impression"]),
    st.booleans(),  # space as '+' or as %20
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.lists(USERS, min_size=6, max_size=6),
    events=st.lists(EVENTS, max_size=25),
)
async def test_counts_match_a_model(
    tmp_path_factory: pytest.TempPathFactory,
    pool: list[str],
    events: list[tuple[int, int, str, bool]],
) -> None:
    model: dict[int, tuple[set[str], int, int]] = {}
    data_dir = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    async with running_app(data_dir) as h:
        for ts, index, kind, plus in events:
            user = pool[index]
            encoded = quote(user, safe="").replace("%20", "+") if plus else quote(user, safe="")
            await h.event(ts, encoded, kind)
            users, clicks, impressions = model.get(ts // HOUR_MS, (set(), 0, 0))
            users.add(user)
            clicks += kind == "click"
            impressions += kind == "impression"
            model[ts // HOUR_MS] = (users, clicks, impressions)
        for hour in range(K - 3, K + 3):
            users, clicks, impressions = model.get(hour, (set(), 0, 0))
            expected = {"unique_users": len(users), "clicks": clicks, "impressions": impressions}
            assert await h.counts(hour * HOUR_MS + 17) == expected, hour

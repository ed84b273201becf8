"""The client's decisions without I/O: a delivery is a generator of actions (post, sleep) fed
with scripted answers and a fake clock."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstats.client import DeliveryFailed, Event, EventRejected, Retry, make_event
from shardstats.client._core import (
    Answer,
    Backoff,
    Delivery,
    Post,
    Sleep,
    batch_body,
    deliver_batch,
    deliver_one,
    judge_batch_answer,
    line_numbers,
    retry_after_seconds,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(delivery: Delivery, clock: FakeClock, answers: Sequence[Answer]
          ) -> tuple[list[Post], list[float], object]:
    """Run a delivery against scripted answers; what it posted, how long it slept, and what it
    returned (or raised)."""
    posts: list[Post] = []
    sleeps: list[float] = []
    script = iter(answers)
    try:
        action = next(delivery)
        while True:
            if isinstance(action, Sleep):
                sleeps.append(action.seconds)
                clock.now += action.seconds
                action = delivery.send(None)
            else:
                posts.append(action)
                action = delivery.send(next(script))
    except StopIteration as done:
        return posts, sleeps, done.value
    except (DeliveryFailed, EventRejected) as exc:
        return posts, sleeps, exc


def events(n: int) -> list[Event]:
    return [make_event(f"user-{i}", "click" if i % 2 else "impression", 1_795_802_400_000 + i)
            for i in range(n)]


def batch_answer(verdicts: list[str]) -> Answer:
    body = {"accepted": verdicts.count("accepted"), "errors": [], "failed": 0, "rejected": 0,
            "results": verdicts}
    return Answer(200, {}, json.dumps(body))


NO_ANSWER = Answer(0, {}, "ConnectError: [Errno 111] Connection refused")


def test_an_event_keeps_its_id_and_timestamp_through_every_retry() -> None:
    clock = FakeClock()
    event = make_event("alice", "click")
    answers = [NO_ANSWER, Answer(500, {}, ""), Answer(503, {"retry-after": "1"}, ""),
               Answer(204, {}, "")]
    posts, sleeps, result = drive(deliver_one(event, Retry(), clock), clock, answers)
    assert result == []
    assert len(posts) == 4 and len(sleeps) == 3
    assert all(post.params == event.query() for post in posts)
    assert event.query()["id"] == event.id and len(event.id) == 32


def test_retry_after_is_waited_at_least() -> None:
    clock = FakeClock()
    answers = [Answer(503, {"retry-after": "2"}, ""), Answer(204, {}, "")]
    _, sleeps, _ = drive(deliver_one(make_event("a", "click"), Retry(), clock), clock, answers)
    assert sleeps[0] >= 2.0


def test_a_400_is_reported_at_once_with_the_servers_reason() -> None:
    clock = FakeClock()
    answers = [Answer(400, {"x-shardstats-error": "timestamp outside the window"}, "")]
    posts, sleeps, result = drive(deliver_one(make_event("a", "click"), Retry(), clock), clock,
                                  answers)
    assert isinstance(result, EventRejected)
    assert result.reason == "timestamp outside the window"
    assert len(posts) == 1 and sleeps == []


@pytest.mark.parametrize("status", [401, 403, 404])
def test_other_client_errors_give_up_without_retrying(status: int) -> None:
    clock = FakeClock()
    batch = events(3)
    answers = [Answer(status, {}, '{"error": "missing or invalid bearer token"}')]
    posts, sleeps, result = drive(deliver_batch(batch, Retry(), clock), clock, answers)
    assert isinstance(result, DeliveryFailed)
    assert result.events == tuple(batch)
    assert f"HTTP {status}" in result.reason
    assert len(posts) == 1 and sleeps == []


def test_giving_up_after_the_deadline_hands_back_every_event() -> None:
    clock = FakeClock()
    batch = events(5)
    policy = Retry(deadline=10.0, first_backoff=0.1, max_backoff=1.0)
    posts, sleeps, result = drive(deliver_batch(batch, policy, clock), clock,
                                  [NO_ANSWER] * 1000)
    assert isinstance(result, DeliveryFailed)
    assert result.events == tuple(batch)
    assert "deadline of 10 s" in result.reason and "Connection refused" in result.reason
    assert sum(sleeps) == pytest.approx(10.0)  # the last wait ends at the deadline
    assert max(sleeps) <= 1.0
    assert len(posts) == len(sleeps) + 1


def test_only_failed_lines_are_sent_again_and_rejections_are_returned() -> None:
    clock = FakeClock()
    batch = events(4)
    answers = [
        batch_answer(["accepted", "failed: storage error", "rejected: user is too long",
                      "failed: storage error"]),
        batch_answer(["accepted", "accepted"]),
    ]
    posts, sleeps, result = drive(deliver_batch(batch, Retry(), clock), clock, answers)
    assert result == [(batch[2], "user is too long")]
    assert posts[0].body == batch_body(batch)
    assert posts[1].body == batch_body([batch[1], batch[3]])
    assert len(sleeps) == 1


def test_a_batch_answer_without_results_is_read_from_its_error_ranges() -> None:
    batch = events(6)
    answer = {"accepted": 3, "failed": 1, "rejected": 2, "errors": [
        {"count": 2, "lines": "1,4", "verdict": "rejected: bad"},
        {"count": 1, "lines": "6", "verdict": "failed: storage error"}]}
    outcome = judge_batch_answer(batch, answer)
    assert outcome.delivered == 3
    assert outcome.rejected == [(batch[0], "bad"), (batch[3], "bad")]
    assert outcome.retry == [batch[5]]


@pytest.mark.parametrize("answer", [
    [], {"results": ["accepted"]}, {"results": ["accepted", "blank"]},
    {"errors": [{"lines": "3", "verdict": "rejected: x"}]}, {"accepted": 2},
])
def test_an_answer_that_does_not_account_for_every_line_is_never_taken_as_delivered(
        answer: object) -> None:
    clock = FakeClock()
    batch = events(2)
    posts, _, result = drive(deliver_batch(batch, Retry(deadline=10.0), clock), clock,
                             [Answer(200, {}, json.dumps(answer))] * 1000)
    assert isinstance(result, DeliveryFailed)  # retried (an unknown outcome) up to the deadline
    assert result.events == tuple(batch) and len(posts) > 1
    assert "unreadable batch answer" in result.reason


@given(st.lists(st.tuples(st.integers(1, 100_000), st.integers(0, 5)), max_size=10))
def test_line_ranges_are_read_as_the_server_writes_them(runs: list[tuple[int, int]]) -> None:
    text = ",".join(f"{start}-{start + extra}" if extra else str(start) for start, extra in runs)
    expected = [n for start, extra in runs for n in range(start, start + extra + 1)]
    assert list(line_numbers(text)) == expected


@given(st.integers(0, 40), st.floats(0, 100), st.one_of(st.none(), st.floats(0, 50)))
def test_backoff_is_bounded_by_max_backoff_retry_after_and_the_deadline(
        retries: int, elapsed: float, retry_after: float | None) -> None:
    policy = Retry(deadline=60.0, first_backoff=0.05, max_backoff=5.0)
    backoff = Backoff(policy, started=0.0, rng=random.Random(retries), retries=retries)
    delay = backoff.delay(elapsed, retry_after)
    if elapsed >= 60.0:
        assert delay is None
        return
    assert delay is not None
    assert 0 <= delay <= 60.0 - elapsed
    assert delay <= max(5.0, retry_after or 0)
    if retry_after is not None:
        assert delay >= min(retry_after, 60.0 - elapsed)


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


@pytest.mark.parametrize(("args", "message"), [
    (("", "click"), "non-empty"),
    (("a\nb", "click"), "control"),
    (("a", "view"), "'click' or 'impression'"),
    (("a", "click", -1), "milliseconds"),
    (("a", "click", True), "milliseconds"),
    (("a", "click", None, "x" * 129), "1..128 bytes"),
])
def test_events_no_server_accepts_are_refused_before_sending(args: tuple[object, ...],
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_event(*args)  # type: ignore[arg-type]


def test_batch_lines_are_json_with_the_four_keys() -> None:
    event = make_event("zoë \"quoted\"", "impression", 5, "id-1")
    assert json.loads(batch_body([event, event]).split(b"\n")[1]) == {
        "timestamp": 5, "user": "zoë \"quoted\"", "event": "impression", "id": "id-1"}


async def test_an_async_sender_outside_its_block_says_how_to_use_it() -> None:
    from shardstats.client import AsyncClient

    async with AsyncClient("http://127.0.0.1:9") as client:
        sender = client.buffered()
        with pytest.raises(RuntimeError, match="async with"):
            await sender.send("alice", "click")

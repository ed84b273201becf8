"""What the client decides, without I/O: events with their ids, the retry schedule, and what
an answer of the server means. The sync and async clients only move bytes and sleep.

Rules (the reason a sent event is counted exactly once, whatever fails on the way):
1. An event gets its ``id`` and its ``timestamp`` when it is created, never later: every
   retry sends the same bytes, so the server, which remembers ids per hour, counts it once.
2. An attempt whose outcome is unknown (a transport error or timeout, any 5xx, a ``failed:``
   line of a batch, a ``200`` whose body is not a batch answer) is retried; so are ``408``
   and ``429``, and a ``503`` or ``429`` waits at least its ``Retry-After``.
3. An answer that will not change by retrying (``400``, a ``rejected:`` line, ``401``, any
   other 4xx) is never retried: a rejected event is reported, anything else gives up.
4. Retries back off exponentially with jitter, and no attempt starts after the delivery's
   deadline: past it the client raises ``DeliveryFailed`` holding every event it did not
   deliver. Nothing is dropped without an exception that carries it.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

import msgspec

EventKind = Literal["click", "impression"]
EVENT_KINDS: frozenset[str] = frozenset({"click", "impression"})
MAX_ID_BYTES = 128
MAX_TIMESTAMP_MS = 2**63 - 1
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # as the server's validation
ERROR_HEADER = "x-shardstats-error"
_encode = msgspec.json.Encoder().encode  # ~20 times faster than json.dumps per line


class ClientError(Exception):
    """Root of the client's exceptions."""


class EventRejected(ClientError):
    """The server answered ``400`` for this event: it will never be counted, retry or not.

    ``reason``: the server's message (its wording may change); ``field`` and ``code``: the
    stable codes of the problem (``timestamp``/``too_old``, ``user``/``too_long``, ...; see
    the README's API section), None from a server that does not send them.
    """

    def __init__(self, event: Event, reason: str, field: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(f"event rejected: {reason}")
        self.event = event
        self.reason = reason
        self.field = field
        self.code = code


class DeliveryFailed(ClientError):
    """The client gave up: the deadline passed or the server refused for good (401, 413, ...).

    ``events`` holds every event not known to be delivered (some may have been counted: a
    later send of the same ``Event`` objects, with their ids, is safe).
    """

    def __init__(self, reason: str, events: Sequence[Event]) -> None:
        super().__init__(f"gave up on {len(events)} event(s): {reason}")
        self.reason = reason
        self.events = tuple(events)


@dataclass(frozen=True, slots=True)
class Event:
    """One event as it will be sent, id included (see rule 1)."""

    user: str
    kind: EventKind
    timestamp: int  # milliseconds since the epoch, UTC
    id: str

    def query(self) -> dict[str, str]:
        return {"timestamp": str(self.timestamp), "user": self.user, "event": self.kind,
                "id": self.id}

    def json_line(self) -> bytes:
        return _encode({"timestamp": self.timestamp, "user": self.user, "event": self.kind,
                        "id": self.id})


def make_event(user: str, event: str, timestamp: int | None = None, id: str | None = None,
               now_ms: int | None = None) -> Event:
    """Check what can be checked here (the server's limits may be stricter) and fix the id and
    timestamp for good. ``ValueError`` for an event no server would accept."""
    if event not in EVENT_KINDS:
        raise ValueError(f"event must be 'click' or 'impression', not {event!r}")
    if not isinstance(user, str) or not user:
        raise ValueError("user must be a non-empty string")
    if _CONTROL.search(user):
        raise ValueError("user contains a control character")
    if not _is_utf8(user):  # a lone surrogate: no body or query could carry it
        raise ValueError("user is not valid UTF-8 (a lone surrogate)")
    if timestamp is None:
        timestamp = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not (
            0 <= timestamp <= MAX_TIMESTAMP_MS):
        raise ValueError("timestamp must be an int of milliseconds since the epoch")
    if id is None:
        id = os.urandom(16).hex()  # 128 random bits; uuid4() costs five times as much
    if not id or not _is_utf8(id) or len(id.encode()) > MAX_ID_BYTES or _CONTROL.search(id):
        raise ValueError(f"id must be 1..{MAX_ID_BYTES} bytes of UTF-8 without control "
                         "characters")
    kind: EventKind = "click" if event == "click" else "impression"
    return Event(user, kind, timestamp, id)


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def batch_body(events: Sequence[Event]) -> bytes:
    """NDJSON, one event per line, no final newline (so line ``i+1`` is ``events[i]``)."""
    return b"\n".join([event.json_line() for event in events])


# -- retries ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Retry:
    """How long and how often to retry one delivery (a single event or one batch)."""

    deadline: float = 60.0  # seconds from the first attempt; no attempt starts after it
    first_backoff: float = 0.05  # seconds before the first retry
    max_backoff: float = 5.0  # longest wait between attempts (a Retry-After may ask more)
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        for name in ("deadline", "first_backoff", "max_backoff"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Retry.{name} must be a finite number >= 0")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError("Retry.multiplier must be >= 1")


@dataclass(slots=True)
class Backoff:
    """The schedule of one delivery: ``delay`` says how long to wait, or None to give up."""

    policy: Retry
    started: float  # monotonic seconds of the first attempt
    rng: random.Random = field(default_factory=random.Random)
    retries: int = 0

    def delay(self, now: float, retry_after: float | None = None) -> float | None:
        left = self.started + self.policy.deadline - now
        if left <= 0:
            return None
        ceiling = min(self.policy.max_backoff,
                      self.policy.first_backoff * self.policy.multiplier ** min(self.retries, 64))
        wait = ceiling * (0.5 + 0.5 * self.rng.random())  # jitter: spread synchronized clients
        if retry_after is not None:
            wait = max(wait, retry_after)
        self.retries += 1
        return min(wait, left)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


# -- what an answer means -----------------------------------------------------------------------

Verdict = Literal["delivered", "retry", "rejected", "give up"]


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str = ""
    retry_after: float | None = None


def judge_status(status: int, headers: Mapping[str, str], body: str) -> Judgement:
    """What an HTTP answer other than a batch's ``200`` means (rules 2 and 3)."""
    if status in (200, 204):
        return Judgement("delivered")
    if status >= 500 or status in (408, 429):
        return Judgement("retry", f"HTTP {status}",
                         retry_after_seconds(headers.get("retry-after")))
    if status == 400:
        return Judgement("rejected", headers.get(ERROR_HEADER) or _error_text(body)
                         or "HTTP 400")
    return Judgement("give up", f"HTTP {status}: {_error_text(body) or 'no reason given'}")


def _error_text(body: str) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    return body.strip()[:200]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    delivered: int
    rejected: list[tuple[Event, str]]  # (event, the server's reason)
    retry: list[Event]  # not made durable this time (a ``failed:`` line)


def judge_batch_answer(events: Sequence[Event], answer: object) -> BatchOutcome:
    """Split the events of a batch by the verdicts of its ``200`` answer. ``ClientError`` when
    the answer does not account for every line (never guess that an event was delivered)."""
    verdicts = _line_verdicts(len(events), answer)
    delivered = 0
    rejected: list[tuple[Event, str]] = []
    retry: list[Event] = []
    for event, verdict in zip(events, verdicts, strict=True):
        if verdict == "accepted":
            delivered += 1
        elif verdict.startswith("rejected: "):
            rejected.append((event, verdict.removeprefix("rejected: ")))
        elif verdict.startswith("failed: "):
            retry.append(event)
        else:
            raise ClientError(f"unexpected verdict {verdict!r} for an event line")
    return BatchOutcome(delivered, rejected, retry)


def _line_verdicts(lines: int, answer: object) -> list[str]:
    if not isinstance(answer, dict):
        raise ClientError("the batch answer is not a JSON object")
    results = answer.get("results")
    if isinstance(results, list) and all(isinstance(r, str) for r in results):
        if len(results) != lines:
            raise ClientError(f"the batch answer has {len(results)} verdicts for {lines} lines")
        return list(results)
    # No per-line results (the server leaves them out when they would be much larger than the
    # body): every line not listed under an error was accepted.
    verdicts = ["accepted"] * lines
    errors = answer.get("errors")
    if not isinstance(errors, list):
        raise ClientError("the batch answer has neither results nor errors")
    for error in errors:
        if not (isinstance(error, dict) and isinstance(error.get("lines"), str)
                and isinstance(error.get("verdict"), str)):
            raise ClientError(f"unreadable batch error entry {error!r}")
        for number in line_numbers(error["lines"]):
            if not 1 <= number <= lines:
                raise ClientError(f"the batch answer names line {number} of {lines}")
            verdicts[number - 1] = error["verdict"]
    return verdicts


def line_numbers(ranges: str) -> Iterator[int]:
    """``"1-3,7"`` -> 1, 2, 3, 7 (the ``lines`` of a batch answer's ``errors``)."""
    for part in filter(None, ranges.split(",")):
        first, _, last = part.partition("-")
        yield from range(int(first), int(last or first) + 1)


# -- one delivery as a generator: the clients perform its actions ------------------------------

@dataclass(frozen=True, slots=True)
class Post:
    """Send this; answer with the ``Answer``."""

    path: str
    params: dict[str, str] | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long, then send None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer; ``status`` 0 when there was none (``text`` says why: a timeout, a
    refused or reset connection)."""

    status: int
    headers: Mapping[str, str]
    text: str


Action = Post | Sleep
Delivery = Generator[Action, Answer | None, list[tuple[Event, str]]]
Clock = Callable[[], float]


def deliver_one(event: Event, policy: Retry, clock: Clock,
                rng: random.Random | None = None) -> Delivery:
    """``POST /analytics`` until it is acknowledged; ``EventRejected`` on a 400."""
    backoff = Backoff(policy, clock(), rng or random.Random())
    while True:
        answer = yield Post("/analytics", params=event.query())
        assert answer is not None
        judgement = _judge(answer)
        if judgement.verdict == "delivered":
            return []
        if judgement.verdict == "rejected":
            raise EventRejected(event, judgement.reason,
                                answer.headers.get(ERROR_HEADER + "-field"),
                                answer.headers.get(ERROR_HEADER + "-reason"))
        yield from _wait_or_give_up(backoff, clock, judgement, [event])


def deliver_batch(events: Sequence[Event], policy: Retry, clock: Clock,
                  rng: random.Random | None = None) -> Delivery:
    """``POST /analytics/batch`` until every event is accepted or rejected; returns the
    rejected ones with their reasons. Lines that failed are sent again, and only they. A body
    refused with ``413`` (more lines or bytes than the server takes) is sent again in halves;
    one event refused that way alone is rejected (no server with that limit will take it)."""
    backoff = Backoff(policy, clock(), rng or random.Random())
    return (yield from _deliver_batch(list(events), backoff, clock))


def _deliver_batch(pending: list[Event], backoff: Backoff, clock: Clock) -> Delivery:
    rejected: list[tuple[Event, str]] = []
    while pending:
        answer = yield Post("/analytics/batch", body=batch_body(pending))
        assert answer is not None
        if answer.status == 200:
            try:
                outcome = judge_batch_answer(pending, json.loads(answer.text))
            except (ClientError, ValueError) as exc:
                # Not the batch answer (a proxy's page, another server): an unknown outcome,
                # retried like no answer at all (rule 2); the ids make that safe.
                judgement = Judgement("retry", f"unreadable batch answer ({exc})")
            else:
                rejected += outcome.rejected
                pending = outcome.retry
                judgement = Judgement("retry", f"{len(pending)} line(s) failed")
        elif answer.status == 413:
            reason = f"HTTP 413: {_error_text(answer.text) or 'too large'}"
            if len(pending) == 1:
                return [*rejected, (pending[0], reason)]
            half = len(pending) // 2
            try:
                rejected += yield from _deliver_batch(pending[:half], backoff, clock)
            except DeliveryFailed as exc:
                raise DeliveryFailed(exc.reason, [*exc.events, *pending[half:]]) from None
            return [*rejected, *(yield from _deliver_batch(pending[half:], backoff, clock))]
        else:
            judgement = _judge(answer)
            if judgement.verdict == "rejected":  # the whole body: not a per-event verdict
                judgement = Judgement("give up", f"HTTP 400: {judgement.reason}")
        if pending:
            yield from _wait_or_give_up(backoff, clock, judgement, pending)
    return rejected


def _judge(answer: Answer) -> Judgement:
    if answer.status == 0:
        return Judgement("retry", answer.text)
    return judge_status(answer.status, answer.headers, answer.text)


def _wait_or_give_up(backoff: Backoff, clock: Clock, judgement: Judgement,
                     pending: Sequence[Event]) -> Generator[Action, Answer | None, None]:
    if judgement.verdict == "give up":
        raise DeliveryFailed(judgement.reason, pending)
    delay = backoff.delay(clock(), judgement.retry_after)
    if delay is None:
        raise DeliveryFailed(f"no success within the deadline of {backoff.policy.deadline:g} s "
                             f"after {backoff.retries + 1} attempt(s); last: {judgement.reason}",
                             pending)
    yield Sleep(delay)

"""The blocking client: ``Client`` (one event, one batch, counts) and ``BufferedSender``."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

from shardstats.client._core import (
    Answer,
    Delivery,
    DeliveryFailed,
    Event,
    EventKind,
    Post,
    Retry,
    Sleep,
    deliver_batch,
    deliver_one,
    make_event,
)

log = logging.getLogger("shardstats.client")

Rejection = tuple[Event, str]  # an event the server refused (400), and its reason
OnRejected = Callable[[Event, str], None]


@dataclass(frozen=True, slots=True)
class Counts:
    unique_users: int
    clicks: int
    impressions: int


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class Client:
    """A connection pool to one shardstats server.

    ``ingest_token`` / ``query_token``: the bearer tokens, when the server requires them.
    ``retry``: how long and how often a delivery is retried; ``timeout``: of one HTTP attempt.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8080", *,
                 ingest_token: str | None = None, query_token: str | None = None,
                 retry: Retry | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.retry = retry or Retry()
        self._ingest = _headers(ingest_token)
        self._query = _headers(query_token)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, user: str, event: EventKind, timestamp: int | None = None, *,
             id: str | None = None) -> Event:
        """``POST /analytics`` once it is durable (retrying as ``retry`` says); returns the
        event as sent. ``EventRejected`` on a 400, ``DeliveryFailed`` when giving up,
        ``ValueError`` for an event no server accepts or too long for a URL (a user of more
        than 64 KiB: ``send_batch`` carries it). ``timestamp``: ms, default now."""
        sent = make_event(user, event, timestamp, id)
        try:
            self._run(deliver_one(sent, self.retry, time.monotonic))
        except httpx.InvalidURL as exc:  # a user of more than 64 KiB: httpx will not send it
            raise ValueError(f"the event does not fit in a URL ({exc}); send_batch carries "
                             "it") from None
        return sent

    def send_batch(self, events: Sequence[Event]) -> list[Rejection]:
        """``POST /analytics/batch`` of events made with ``make_event`` (or taken from a
        ``DeliveryFailed``), retrying the lines that failed; returns the rejected ones."""
        if not events:
            return []
        return self._run(deliver_batch(events, self.retry, time.monotonic))

    def counts(self, timestamp: int) -> Counts:
        """``GET /analytics``: the counts of the UTC hour holding ``timestamp`` (no retries)."""
        response = self._http.get("/analytics", params={"timestamp": str(timestamp)},
                                  headers=self._query)
        response.raise_for_status()
        body = response.json()
        return Counts(body["unique_users"], body["clicks"], body["impressions"])

    def buffered(self, *, max_events: int = 1000, max_delay: float = 1.0,
                 max_buffer: int = 100_000, on_rejected: OnRejected | None = None
                 ) -> BufferedSender:
        return BufferedSender(self, max_events=max_events, max_delay=max_delay,
                              max_buffer=max_buffer, on_rejected=on_rejected)

    def _run(self, delivery: Delivery) -> list[Rejection]:
        try:
            action = next(delivery)
            while True:
                if isinstance(action, Sleep):
                    time.sleep(action.seconds)
                    action = delivery.send(None)
                else:
                    action = delivery.send(self._post(action))
        except StopIteration as done:
            result: list[Rejection] = done.value
            return result

    def _post(self, post: Post) -> Answer:
        try:
            response = self._http.post(post.path, params=post.params, content=post.body,
                                       headers=self._ingest)
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            return Answer(0, {}, f"{type(exc).__name__}: {exc}")
        return Answer(response.status_code, response.headers, response.text)


class BufferedSender:
    """Collects events and posts them to ``/analytics/batch`` from a background thread: when
    ``max_events`` are waiting, or ``max_delay`` seconds after the oldest was added, or on
    ``flush()``/``close()``. Use it as a context manager: leaving it flushes (one never closed
    is flushed when the interpreter exits).

    One batch is in flight at a time; ``send`` blocks while ``max_buffer`` events wait.
    Rejected events (400 verdicts) are logged, kept in ``rejected`` and passed to
    ``on_rejected`` (called from the sender's thread). When a delivery gives up, the sender
    stops and ``send``, ``flush`` and ``close`` raise that ``DeliveryFailed``, whose
    ``events`` hold every event not delivered; any other error in the thread (a closed
    ``Client``, an ``on_rejected`` that raises) does the same, the error as its ``__cause__``.
    A forked child cannot use its parent's sender (``send`` raises ``RuntimeError``): it
    makes its own.
    """

    def __init__(self, client: Client, *, max_events: int = 1000, max_delay: float = 1.0,
                 max_buffer: int = 100_000, on_rejected: OnRejected | None = None) -> None:
        if not 1 <= max_events <= max_buffer:
            raise ValueError("need 1 <= max_events <= max_buffer")
        if not max_delay >= 0:
            raise ValueError("max_delay must be >= 0")
        self._client = client
        self.max_events, self.max_delay, self.max_buffer = max_events, max_delay, max_buffer
        self._on_rejected = on_rejected
        self.rejected: list[Rejection] = []
        self.delivered = 0
        self._buffer: list[Event] = []
        self._oldest = 0.0  # monotonic time the oldest buffered event was added
        self._in_flight = 0
        self._flushes = 0  # flush() calls waiting: send what is buffered now
        self._closing = False
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        self._pid = os.getpid()  # a forked child has a copy of this sender, not its thread
        self._thread = threading.Thread(target=self._work, name="shardstats-sender",
                                        daemon=True)
        self._thread.start()
        # A sender nobody closed is flushed when the interpreter exits (the thread is a daemon
        # so that exit does not hang on it); close() unregisters this.
        atexit.register(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def send(self, user: str, event: EventKind, timestamp: int | None = None, *,
             id: str | None = None) -> Event:
        """Buffer an event (ids and timestamp fixed now); returns it."""
        return self.send_event(make_event(user, event, timestamp, id))

    def send_event(self, event: Event) -> Event:
        self._refuse_in_a_forked_child()
        with self._changed:
            while True:
                self._raise_if_stopped()
                if len(self._buffer) < self.max_buffer:
                    break
                self._changed.wait()
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append(event)
            if len(self._buffer) == 1 or len(self._buffer) >= self.max_events:
                self._changed.notify_all()
        return event

    def flush(self) -> None:
        """Return once every event sent so far is delivered or rejected."""
        self._refuse_in_a_forked_child()
        with self._changed:
            self._flushes += 1
            self._changed.notify_all()
            try:
                while self._failure is None and (self._buffer or self._in_flight):
                    self._changed.wait()
            finally:
                self._flushes -= 1
            self._raise_if_stopped(closing_ok=True)

    def close(self) -> None:
        """Flush, then stop the thread. Idempotent; raises the delivery failure if any."""
        atexit.unregister(self.close)
        if os.getpid() != self._pid:
            return  # the parent's sender: its events are the parent's to post (and its lock
            # may have been held by a thread the child does not have)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        with self._changed:
            self._raise_if_stopped(closing_ok=True)

    @property
    def pending(self) -> int:
        """Events buffered or in flight."""
        with self._changed:
            return len(self._buffer) + self._in_flight

    def _refuse_in_a_forked_child(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("this BufferedSender belongs to the process that forked this "
                               "one: make a Client and a sender in the child")

    def _raise_if_stopped(self, closing_ok: bool = False) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing and not closing_ok:
            raise RuntimeError("the sender is closed")

    def _next_batch(self) -> list[Event] | None:
        """Wait until a batch is due; None when closing with nothing left."""
        with self._changed:
            while True:
                if not self._buffer:
                    if self._closing:
                        return None
                    self._changed.wait()
                    continue
                due = self._oldest + self.max_delay - time.monotonic()
                if (len(self._buffer) >= self.max_events or self._closing or self._flushes
                        or due <= 0):
                    batch = self._buffer[:self.max_events]
                    del self._buffer[:self.max_events]
                    self._oldest = time.monotonic()  # the rest waits max_delay again at most
                    self._in_flight = len(batch)
                    self._changed.notify_all()  # room in the buffer
                    return batch
                self._changed.wait(due)

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                rejected = self._client.send_batch(batch)
            except DeliveryFailed as exc:
                failure = exc
            except BaseException as exc:  # not a verdict on the events: they go back too
                failure = DeliveryFailed(f"{type(exc).__name__}: {exc}", batch)
                failure.__cause__ = exc
            else:
                try:
                    self._delivered(len(batch) - len(rejected), rejected)
                    continue
                except BaseException as exc:
                    failure = DeliveryFailed(f"on_rejected raised {type(exc).__name__}: {exc}",
                                             [])
                    failure.__cause__ = exc
            with self._changed:  # raised again to the caller by send/flush/close, with
                failure.events = (*failure.events, *self._buffer)  # every event not delivered
                self._buffer.clear()
            self._stop(failure)
            return

    def _delivered(self, count: int, rejected: list[Rejection]) -> None:
        try:
            for event, reason in rejected:
                log.warning("shardstats rejected event %s (user %r): %s", event.id, event.user,
                            reason)
                if self._on_rejected is not None:
                    self._on_rejected(event, reason)
        finally:
            with self._changed:
                self.delivered += count
                self.rejected += rejected
                self._in_flight = 0
                self._changed.notify_all()

    def _stop(self, failure: BaseException) -> None:
        with self._changed:
            self._failure = failure
            self._in_flight = 0
            self._changed.notify_all()

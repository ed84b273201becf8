"""The async client on anyio (so the same code runs under trio and under asyncio):
``AsyncClient`` and ``AsyncBufferedSender``, mirrors of the blocking ones."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Self

import anyio
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
from shardstats.client._sync import Counts, OnRejected, Rejection, _headers

log = logging.getLogger("shardstats.client")


class AsyncClient:
    """``Client`` for async code (trio or asyncio); the same arguments and methods, awaited."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", *,
                 ingest_token: str | None = None, query_token: str | None = None,
                 retry: Retry | None = None, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.retry = retry or Retry()
        self._ingest = _headers(ingest_token)
        self._query = _headers(query_token)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, user: str, event: EventKind, timestamp: int | None = None, *,
                   id: str | None = None) -> Event:
        """See ``Client.send``."""
        sent = make_event(user, event, timestamp, id)
        try:
            await self._run(deliver_one(sent, self.retry, anyio.current_time))
        except httpx.InvalidURL as exc:  # a user of more than 64 KiB: httpx will not send it
            raise ValueError(f"the event does not fit in a URL ({exc}); send_batch carries "
                             "it") from None
        return sent

    async def send_batch(self, events: Sequence[Event]) -> list[Rejection]:
        """See ``Client.send_batch``."""
        if not events:
            return []
        return await self._run(deliver_batch(events, self.retry, anyio.current_time))

    async def counts(self, timestamp: int) -> Counts:
        """See ``Client.counts``."""
        response = await self._http.get("/analytics", params={"timestamp": str(timestamp)},
                                        headers=self._query)
        response.raise_for_status()
        body = response.json()
        return Counts(body["unique_users"], body["clicks"], body["impressions"])

    def buffered(self, *, max_events: int = 1000, max_delay: float = 1.0,
                 max_buffer: int = 100_000, on_rejected: OnRejected | None = None
                 ) -> AsyncBufferedSender:
        """``async with client.buffered() as sender: await sender.send(...)``."""
        return AsyncBufferedSender(self, max_events=max_events, max_delay=max_delay,
                                   max_buffer=max_buffer, on_rejected=on_rejected)

    async def _run(self, delivery: Delivery) -> list[Rejection]:
        try:
            action = next(delivery)
            while True:
                if isinstance(action, Sleep):
                    await anyio.sleep(action.seconds)
                    action = delivery.send(None)
                else:
                    action = delivery.send(await self._post(action))
        except StopIteration as done:
            result: list[Rejection] = done.value
            return result

    async def _post(self, post: Post) -> Answer:
        try:
            response = await self._http.post(post.path, params=post.params, content=post.body,
                                             headers=self._ingest)
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            return Answer(0, {}, f"{type(exc).__name__}: {exc}")
        return Answer(response.status_code, response.headers, response.text)


class _Changed:
    """Wakes every task waiting for the sender's state to change."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class AsyncBufferedSender:
    """``BufferedSender`` for async code: a task of its own posts the batches. Only usable as
    ``async with``: leaving the block flushes (also when the block raised), except when the
    block is cancelled, in which case the unsent events stay in ``unsent()``."""

    def __init__(self, client: AsyncClient, *, max_events: int = 1000, max_delay: float = 1.0,
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
        self._in_flight: list[Event] = []
        self._oldest = 0.0
        self._flushes = 0
        self._closing = False
        self._failure: Exception | None = None
        self._running: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> Self:
        if self._running is not None:
            raise RuntimeError("an AsyncBufferedSender runs once")
        self._changed = _Changed()
        self._done = anyio.Event()
        self._running = self._run()
        await self._running.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        assert self._running is not None
        return await self._running.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        # Nothing is raised inside the task group (it would arrive wrapped in an
        # ExceptionGroup): the block's exception and a delivery failure are raised after it.
        body_error: BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._work)
            try:
                yield
            except anyio.get_cancelled_exc_class() as exc:
                body_error = exc
                group.cancel_scope.cancel()  # no flush: unsent() keeps what was not sent
            except BaseException as exc:
                body_error = exc
                await self._drain()  # what was sent before the error still goes out
            else:
                await self._drain()
        if body_error is not None:
            if self._failure is not None:
                body_error.add_note(f"and the sender failed: {self._failure} "
                                    "(the events are in sender.unsent())")
            raise body_error
        if self._failure is not None:
            raise self._failure

    async def _drain(self) -> None:
        self._closing = True
        self._changed.fire()
        await self._done.wait()

    async def send(self, user: str, event: EventKind, timestamp: int | None = None, *,
                   id: str | None = None) -> Event:
        """Buffer an event (id and timestamp fixed now); waits while the buffer is full."""
        return await self.send_event(make_event(user, event, timestamp, id))

    async def send_event(self, event: Event) -> Event:
        # A send that raises Cancelled did not buffer its event (trio's rule): a caller who
        # sends it again, with a new id, would otherwise have it counted twice.
        await anyio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._raise_if_stopped()
            if len(self._buffer) < self.max_buffer:
                break
            await self._changed.wait()
        if not self._buffer:
            self._oldest = anyio.current_time()
        self._buffer.append(event)
        if len(self._buffer) == 1 or len(self._buffer) >= self.max_events:
            self._changed.fire()
        await anyio.lowlevel.cancel_shielded_checkpoint()
        return event

    async def flush(self) -> None:
        """Return once every event sent so far is delivered or rejected."""
        self._raise_if_stopped()
        self._flushes += 1
        self._changed.fire()
        try:
            while self._failure is None and (self._buffer or self._in_flight):
                await self._changed.wait()
        finally:
            self._flushes -= 1
        self._raise_if_stopped(closing_ok=True)

    @property
    def pending(self) -> int:
        """Events buffered or in flight."""
        return len(self._buffer) + len(self._in_flight)

    def unsent(self) -> list[Event]:
        """Events not known to be delivered (after a cancellation or a failure): sending them
        again is safe (they keep their ids)."""
        if isinstance(self._failure, DeliveryFailed):
            return list(self._failure.events)
        return [*self._in_flight, *self._buffer]

    def _raise_if_stopped(self, closing_ok: bool = False) -> None:
        if self._running is None:
            raise RuntimeError("use the sender as `async with client.buffered() as sender:`")
        if self._failure is not None:
            raise self._failure
        if self._closing and not closing_ok:
            raise RuntimeError("the sender is closed")

    async def _next_batch(self) -> list[Event] | None:
        while True:
            if not self._buffer:
                if self._closing:
                    return None
                await self._changed.wait()
                continue
            due = self._oldest + self.max_delay - anyio.current_time()
            if len(self._buffer) >= self.max_events or self._closing or self._flushes or due <= 0:
                batch = self._buffer[:self.max_events]
                del self._buffer[:self.max_events]
                self._oldest = anyio.current_time()
                self._in_flight = batch
                self._changed.fire()
                return batch
            with anyio.move_on_after(due):
                await self._changed.wait()

    async def _work(self) -> None:
        try:
            while (batch := await self._next_batch()) is not None:
                failure: DeliveryFailed
                try:
                    rejected = await self._client.send_batch(batch)
                except DeliveryFailed as exc:
                    failure = exc
                except Exception as exc:  # not a verdict on the events: they go back too
                    failure = DeliveryFailed(f"{type(exc).__name__}: {exc}", batch)
                    failure.__cause__ = exc
                else:
                    try:
                        self._delivered(len(batch) - len(rejected), rejected)
                        continue
                    except Exception as exc:
                        failure = DeliveryFailed(
                            f"on_rejected raised {type(exc).__name__}: {exc}", [])
                        failure.__cause__ = exc
                # raised again to the caller by send/flush/exit, with every event not delivered
                failure.events = (*failure.events, *self._buffer)
                self._buffer.clear()
                self._failure = failure
                self._in_flight = []
                self._changed.fire()
                return
        finally:
            self._done.set()

    def _delivered(self, count: int, rejected: list[Rejection]) -> None:
        try:
            for event, reason in rejected:
                log.warning("shardstats rejected event %s (user %r): %s", event.id, event.user,
                            reason)
                if self._on_rejected is not None:
                    self._on_rejected(event, reason)
        finally:
            self.delivered += count
            self.rejected += rejected
            self._in_flight = []
            self._changed.fire()

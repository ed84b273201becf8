"""The publisher: the one task that turns this node's validated events into log records.

Theory of operation:
- Requests queue ``(events, reply)`` on a bounded inbox (full: 503, as a full shard inbox).
- Group commit, as the shards do with fsync: the publisher takes everything queued (up to
  ``max_events`` events and ``max_bytes`` of user strings and ids), publishes it as one
  record and answers every request in the group once the log acknowledges it (JetStream: a
  PubAck, stored on a quorum). Up to ``in_flight`` records are published concurrently, so
  while acknowledgements travel the next groups form; an idle node publishes at once (no
  lingering).
- Each record carries a unique ``msg_id`` (node name, a per-start random part, a counter);
  when the outcome of a publish is unknown (sent, no ack in time) it is retried once with
  the same id, which the log stores at most once. Still unknown: the requests get
  ``LogOutcomeUnknown`` (500; the events may be counted). Nothing sent (log unreachable, no
  quorum): ``LogUnavailable`` (503 + Retry-After; nothing was stored).
- A request larger than one record (a big batch) is split into several records before it is
  queued; it is answered once all of them are acknowledged, and fails if any failed (its
  other records stay in the log: a retry with event ids counts them once).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from dataclasses import dataclass

import trio

from shardstats.cluster.log import EventLog
from shardstats.core import stream
from shardstats.core.events import EventColumns
from shardstats.errors import (
    LogOutcomeUnknown,
    LogUnavailable,
    NotReady,
    Overloaded,
    ShardstatsError,
)
from shardstats.shards.pending import Pending

log = logging.getLogger("shardstats.cluster")

_Request = tuple[EventColumns, Pending[None]]


@dataclass(frozen=True)
class PublisherStatistics:
    queued: int
    in_flight: int
    records: int
    events: int
    failed_records: int
    unknown_outcomes: int


class Publisher:
    def __init__(
        self,
        log_: EventLog,
        node_name: str,
        *,
        inbox_size: int = 4096,
        max_events: int = 4096,
        max_bytes: int = 512 * 1024,
        in_flight: int = 8,
    ) -> None:
        self._log = log_
        self._prefix = f"{node_name}:{secrets.token_hex(4)}:"
        self._counter = itertools.count(1)
        # Every record within the fixed bound all nodes check (``core.stream`` rule 1).
        self._max_events = min(max_events, stream.MAX_HOURS_PER_RECORD)
        self._max_bytes = max_bytes
        self._slots = trio.Semaphore(in_flight)
        self._in_flight_limit = in_flight
        self._send, self._receive = trio.open_memory_channel[_Request](inbox_size)
        self._records = self._events = self._failed = self._unknown = 0

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(
            self._receive.statistics().current_buffer_used,
            self._in_flight_limit - self._slots.value,
            self._records, self._events, self._failed, self._unknown,
        )

    async def publish(self, events: EventColumns) -> None:
        """Return once the log holds every event (raises ``ShardstatsError`` otherwise)."""
        pendings = []
        for part in self._split(events):
            pending: Pending[None] = Pending()
            try:
                self._send.send_nowait((part, pending))
            except trio.WouldBlock:
                raise Overloaded("too many events waiting for the log") from None
            except trio.ClosedResourceError:  # stopping: what was queued is still answered
                raise NotReady("shutting down") from None
            pendings.append(pending)
        for pending in pendings:
            await pending.wait()

    def close(self) -> None:
        self._send.close()

    def _split(self, events: EventColumns) -> list[EventColumns]:
        n = len(events)
        if n <= self._max_events and _size(events) <= self._max_bytes:
            return [events]
        per = max(1, min(self._max_events, n * self._max_bytes // max(1, _size(events))))
        return [events.select(range(i, min(n, i + per))) for i in range(0, n, per)]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            async for first in self._receive:
                await self._slots.acquire()
                group = self._gather(first)
                nursery.start_soon(self._publish, group)

    def _gather(self, first: _Request) -> list[_Request]:
        group = [first]
        count, size = len(first[0]), _size(first[0])
        while count < self._max_events and size < self._max_bytes:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            group.append(item)
            count += len(item[0])
            size += _size(item[0])
        return group

    async def _publish(self, group: list[_Request]) -> None:
        try:
            events = EventColumns.concat([events for events, _ in group])
            data = stream.encode(events)
            msg_id = f"{self._prefix}{next(self._counter)}"
            try:
                await self._publish_once_or_twice(data, msg_id)
            except ShardstatsError as exc:
                self._failed += 1
                for _, pending in group:
                    pending.fail(exc)
                return
            self._records += 1
            self._events += len(events)
            for _, pending in group:
                pending.set(None)
        finally:
            self._slots.release()

    async def _publish_once_or_twice(self, data: bytes, msg_id: str) -> None:
        try:
            await self._log.publish(data, msg_id)
        except LogOutcomeUnknown as exc:
            self._unknown += 1
            log.warning("publish %s: %s; retrying once with the same id", msg_id, exc)
            try:
                await self._log.publish(data, msg_id)
            except LogUnavailable as again:
                # The first attempt may have been stored: a 503 would invite a retry that
                # counts it twice. Unknown it stays (500).
                raise LogOutcomeUnknown(f"{exc}; the retry could not be sent: {again}") from again


def _size(events: EventColumns) -> int:
    ids = 0 if events.ids is None else sum(len(i) for i in events.ids if i)
    return sum(map(len, events.users)) + ids + 12 * len(events)

"""``InMemoryLog``: a correct ``EventLog`` in memory, with hooks to inject the faults a real
log has, for unit and property tests of publishers and materializers.

It keeps every rule of ``shardstats.cluster.log``. The fault hooks bend only what a real log
may do: ``redeliver`` and ``break_consumers`` are at-least-once delivery and a lost consumer;
``fail_publish`` is a dropped connection before or after the log stored the record;
``set_available(False)`` is a lost quorum; ``dedupe = False`` is a retry arriving after the
duplicate window; ``drop_before`` is retention.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal, Self

import trio

from shardstats.cluster.log import AsyncClosing, LogCounters, LogRecord, LogStatistics
from shardstats.errors import LogOutcomeUnknown, LogUnavailable

PublishFault = Literal["unavailable", "unknown_stored", "unknown_lost"]

_NS = 1_000_000_000


class _Consumer:
    """One open ``records()`` iterator."""

    def __init__(self, log: InMemoryLog, after_seq: int) -> None:
        self._log = log
        self.position = after_seq  # highest seq handed out from the log (not replays)
        self.replay: collections.deque[LogRecord] = collections.deque()
        self.broken = False
        self.recent: collections.deque[LogRecord] = collections.deque(maxlen=1024)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LogRecord:
        await trio.lowlevel.checkpoint()
        log = self._log
        while True:
            if log.closed:
                raise StopAsyncIteration
            if self.broken:
                self.broken = False
                raise LogUnavailable("consumer lost (injected)", reason="consumer_lost")
            if self.replay:
                log._counts.delivered += 1
                return self.replay.popleft()
            record = log._first_after(self.position)
            if record is not None:
                self.position = record.seq
                self.recent.append(record)
                log._counts.delivered += 1
                return record
            await log._changed.wait()


class InMemoryLog(AsyncClosing):
    """An ``EventLog`` held in a list. Not thread-safe; one trio run."""

    def __init__(
        self,
        *,
        duplicate_window_seconds: float = 120.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._window_ns = int(duplicate_window_seconds * _NS)
        self._clock_ns = clock_ns
        self._records: list[LogRecord] = []
        self._seqs: list[int] = []  # parallel to _records, for bisect
        self._next_seq = 1
        # msg_id -> its latest record, oldest first; trimmed to the duplicate window.
        self._by_msg_id: collections.OrderedDict[str, LogRecord] = collections.OrderedDict()
        self._changed = trio.Event()
        self._consumers: set[_Consumer] = set()
        self._faults: collections.deque[PublishFault] = collections.deque()
        self.closed = False
        self.available = True
        # False: behave as if every retry came after the duplicate window.
        self.dedupe = True
        self._counts = LogCounters()

    # -- EventLog -----------------------------------------------------------------------------

    async def publish(self, data: bytes, msg_id: str) -> int:
        await trio.lowlevel.checkpoint()
        if self.closed or not self.available:
            self._counts.unavailable += 1
            reason = "closed" if self.closed else "no_quorum"
            raise LogUnavailable(f"in-memory log is {reason}", reason=reason)
        fault = self._faults.popleft() if self._faults else None
        if fault == "unavailable":
            self._counts.unavailable += 1
            raise LogUnavailable("publish failed (injected)", reason="disconnected")
        if fault == "unknown_lost":
            self._counts.unknown += 1
            raise LogOutcomeUnknown("no ack (injected; record not stored)")
        seq, duplicate = self._store(data, msg_id)
        if fault == "unknown_stored":
            self._counts.unknown += 1
            raise LogOutcomeUnknown("no ack (injected; record stored)")
        self._counts.published += 1
        self._counts.duplicates += duplicate
        self._counts.last_published = max(self._counts.last_published, seq)
        return seq

    async def last_seq(self) -> int:
        await trio.lowlevel.checkpoint()
        if self.closed or not self.available:
            reason = "closed" if self.closed else "no_quorum"
            raise LogUnavailable(f"in-memory log is {reason}", reason=reason)
        return self._next_seq - 1

    @asynccontextmanager
    async def records(self, after_seq: int) -> AsyncIterator[AsyncIterator[LogRecord]]:
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        consumer = _Consumer(self, after_seq)
        self._consumers.add(consumer)
        self._counts.open_consumers += 1
        try:
            yield consumer
        finally:
            self._consumers.discard(consumer)
            self._counts.open_consumers -= 1

    def statistics(self) -> LogStatistics:
        return self._counts.snapshot(connected=self.available and not self.closed)

    async def aclose(self) -> None:
        self.closed = True
        self._wake()
        await trio.lowlevel.checkpoint()

    # -- inspection -----------------------------------------------------------------------------

    def stored(self) -> list[LogRecord]:
        """Every record the log holds, in order."""
        return list(self._records)

    # -- fault injection ------------------------------------------------------------------------

    def set_available(self, available: bool) -> None:
        """False: publish and last_seq raise LogUnavailable (lost quorum); consumers wait."""
        self.available = available
        self._wake()

    def fail_publish(self, *faults: PublishFault) -> None:
        """The next publishes fail, one fault each, in order:

        ``unavailable``: nothing stored, LogUnavailable. ``unknown_stored``: the record is
        stored, then LogOutcomeUnknown. ``unknown_lost``: nothing stored, LogOutcomeUnknown.
        """
        self._faults.extend(faults)

    def redeliver(self, count: int) -> None:
        """Every open consumer delivers its last ``count`` records again before going on."""
        for consumer in self._consumers:
            again = list(consumer.recent)[-count:] if count > 0 else []
            consumer.replay.extend(again)
        self._wake()

    def break_consumers(self) -> None:
        """Every open iterator raises LogUnavailable at its next step (caller must reopen)."""
        for consumer in self._consumers:
            consumer.broken = True
        self._counts.restarts += len(self._consumers)
        self._wake()

    def drop_before(self, seq: int) -> None:
        """Retention: forget every record with a sequence below ``seq``."""
        cut = bisect.bisect_left(self._seqs, seq)
        del self._records[:cut]
        del self._seqs[:cut]

    # -- internals --------------------------------------------------------------------------------

    def _store(self, data: bytes, msg_id: str) -> tuple[int, bool]:
        now = self._clock_ns()
        previous = self._by_msg_id.get(msg_id)
        if (
            self.dedupe
            and previous is not None
            and now - previous.timestamp_ns < self._window_ns
        ):
            return previous.seq, True
        record = LogRecord(seq=self._next_seq, data=data, msg_id=msg_id, timestamp_ns=now)
        self._next_seq += 1
        self._records.append(record)
        self._seqs.append(record.seq)
        self._by_msg_id[msg_id] = record
        self._by_msg_id.move_to_end(msg_id)
        while self._by_msg_id:
            oldest = next(iter(self._by_msg_id.values()))
            if now - oldest.timestamp_ns < self._window_ns:
                break
            self._by_msg_id.popitem(last=False)
        self._wake()
        return record.seq, False

    def _first_after(self, seq: int) -> LogRecord | None:
        index = bisect.bisect_right(self._seqs, seq)
        return self._records[index] if index < len(self._records) else None

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

"""The replicated event log cluster mode is built on, as a small trio-native interface.

Cluster mode treats an external, replicated, append-only log as the truth (README "Cluster
mode").
This module says what shardstats needs from such a log and nothing more, so that NATS
JetStream (``shardstats.cluster.jetstream``), the in-memory fake (``shardstats.cluster.memory``)
or a Kafka-compatible log can stand behind it. Nothing outside ``shardstats.cluster`` imports
nats; callers see only ``EventLog``, ``LogRecord``, ``LogStatistics`` and the two errors.

Rules (every implementation keeps them; ``tests/cluster/test_log_contract.py`` checks them
against each one):

Rule 1 - sequences. Every stored record gets a sequence number: 1-based, strictly
increasing in the order the log stored them, never reused. Numbers may be skipped only where
the log no longer holds records (retention removed them); a consumer that must know compares
the first ``seq`` it receives with the one it asked for.

Rule 2 - publish. ``publish(data, msg_id)`` returns the record's ``seq`` only once the log has
stored it durably by its own definition (JetStream: on a quorum of replicas, the PubAck).
Publishing a ``msg_id`` already stored within the log's duplicate window stores nothing and
returns the original ``seq``. It raises ``LogUnavailable`` (503, retry is safe) when nothing
was sent: not connected, log closed, or the log answered that it cannot store (no quorum /
no stream). It raises ``LogOutcomeUnknown`` (500) when the record was sent but no answer came
in time: it may or may not be stored, and a retry with the same ``msg_id`` within the duplicate
window settles it without a second copy. Cancelling a publish leaves the outcome unknown too.

Rule 3 - the read barrier. ``last_seq()`` returns the last sequence the log holds at the time
of the call (0 for an empty log). A consumer that has applied everything up to that number has
seen every record acknowledged before the call started. It raises ``LogUnavailable`` when the
log cannot be asked.

Rule 4 - consuming. ``records(after_seq)`` is an async context manager giving an async
iterator over the records with ``seq > after_seq``, in increasing ``seq`` order, waiting for new
records when it reaches the end. Delivery is at least once: after a fault an implementation
may deliver a record again (``seq`` not above one already delivered), so consumers apply a
record only if its ``seq`` is above the last one they applied. Implementations ride out short
outages themselves (reconnect and resume after the last delivered ``seq``); when they cannot,
iteration raises ``LogUnavailable`` and the caller opens a new ``records()`` from its own last
applied ``seq``. Iteration ends (``StopAsyncIteration``) only when the log is closed.
Leaving the context manager releases the consumer.

Rule 5 - lifetime. A log is an async context manager; ``aclose()`` is idempotent. After it,
``publish`` and ``last_seq`` raise ``LogUnavailable(reason="closed")`` and open iterators end.

Rule 6 - statistics. ``statistics()`` returns a frozen ``LogStatistics`` snapshot of counters,
cheap enough to call on every ``/metrics`` scrape.

Every call is a trio checkpoint and every wait inside an implementation is bounded by a
timeout from its settings; cancellation of the caller is honoured (trio.Cancelled propagates).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from shardstats.errors import LogOutcomeUnknown, LogUnavailable

__all__ = [
    "EventLog",
    "LogCounters",
    "LogOutcomeUnknown",
    "LogRecord",
    "LogStatistics",
    "LogUnavailable",
]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One stored record as a consumer receives it."""

    seq: int  # Rule 1: 1-based, strictly increasing
    data: bytes
    msg_id: str  # the publisher's id ("" when the log did not keep one)
    timestamp_ns: int  # when the log stored it, ns since the epoch (consumer lag in seconds)

    def __post_init__(self) -> None:
        if self.seq < 1:
            raise ValueError(f"a record's seq is 1-based, got {self.seq}")


@dataclass(frozen=True, slots=True)
class LogStatistics:
    """Counters of one ``EventLog`` since it was opened (Rule 6)."""

    connected: bool  # can publish now, as far as the log client knows
    published: int  # publishes that returned a seq (duplicates included)
    duplicates: int  # ... of which the log recognised the msg_id and stored nothing
    publish_unavailable: int  # publishes that raised LogUnavailable
    publish_unknown: int  # publishes that raised LogOutcomeUnknown
    last_published_seq: int  # highest seq a publish returned (0: none)
    delivered: int  # records handed to consumers
    redelivered_skipped: int  # records dropped because their seq was not above the last given
    consumer_restarts: int  # times a consumer was re-created to resume after a fault
    open_consumers: int


class LogCounters:
    """The running counts behind ``LogStatistics``, shared by every ``EventLog`` implementation."""

    def __init__(self) -> None:
        self.published = 0
        self.duplicates = 0
        self.unavailable = 0
        self.unknown = 0
        self.last_published = 0
        self.delivered = 0
        self.skipped = 0
        self.restarts = 0
        self.open_consumers = 0

    def snapshot(self, *, connected: bool) -> LogStatistics:
        return LogStatistics(
            connected=connected,
            published=self.published,
            duplicates=self.duplicates,
            publish_unavailable=self.unavailable,
            publish_unknown=self.unknown,
            last_published_seq=self.last_published,
            delivered=self.delivered,
            redelivered_skipped=self.skipped,
            consumer_restarts=self.restarts,
            open_consumers=self.open_consumers,
        )


class AsyncClosing:
    """``async with`` for a log: enter returns the log itself, exit awaits ``aclose()``."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventLog(Protocol):
    """The log interface (see the module docstring for the rules)."""

    async def publish(self, data: bytes, msg_id: str) -> int: ...

    async def last_seq(self) -> int: ...

    def records(
        self, after_seq: int
    ) -> AbstractAsyncContextManager[AsyncIterator[LogRecord]]: ...

    def statistics(self) -> LogStatistics: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

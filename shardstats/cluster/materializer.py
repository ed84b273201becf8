"""The materializer: applies the replicated log to this node's hour shards, in order, exactly
once per hour.

Theory of operation (the rules the hours rely on are in ``shardstats.core.stream``):
- ``applied`` is the watermark: every record with ``seq <= applied`` is committed to every
  hour it touches. It only moves forward, record by record, once all of a record's hour
  commits succeeded. It is saved to the data directory every ``save_interval`` seconds and
  on stop; a saved value is never above the truth, so after a crash the node replays a little
  more and the hours skip what they already hold.
- A *pass* reads the log from ``applied + 1``. One task (the dispatcher) takes records in
  order, decodes each, and queues each hour's part on that hour's shard with a
  ``StreamTag(seq, prev)`` without waiting for the commit; a collector task waits for the
  commits record by record and advances ``applied``. At most ``window`` records are in
  flight, so a slow disk slows the pass instead of filling memory.
- Any failure (the log unreachable, a commit failed, a record refused for a gap) ends the
  pass; the next one starts after a short pause from ``applied``, and the hours' tags make
  the replay exactly-once. A record that cannot be decoded is skipped (logged and counted)
  by every node alike.
- ``wait_applied(seq)`` lets the read barrier wait until ``applied >= seq``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import trio

from shardstats.cluster.log import EventLog, LogRecord
from shardstats.core import stream
from shardstats.errors import ShardstatsError
from shardstats.shards.pending import Pending
from shardstats.shards.registry import Registry
from shardstats.storage.datadir import DataDir

log = logging.getLogger("shardstats.cluster")

_InFlight = tuple[LogRecord, list[Pending[None]]]


@dataclass(frozen=True)
class MaterializerStatistics:
    applied_seq: int  # every record up to here is in this node's hours
    log_last_seq: int  # the log's last seq, as last seen (0: not yet asked)
    lag_records: int
    lag_seconds: float  # age of the oldest record not applied yet (0 when caught up)
    records: int  # records applied since start
    events: int
    invalid_records: int
    passes: int  # passes over the log started (1 + restarts after failures)
    caught_up: bool  # has reached the log's last seq as seen at start


class Materializer:
    def __init__(
        self,
        log_: EventLog,
        registry: Registry,
        datadir: DataDir,
        *,
        window: int = 256,
        save_interval: float = 1.0,
        retry_delay: float = 0.2,
    ) -> None:
        self._log = log_
        self._registry = registry
        self._datadir = datadir
        self._window = window
        self._save_interval = save_interval
        self._retry_delay = retry_delay
        self.applied = 0
        self._saved = 0
        self._log_last = 0
        self._start_target: int | None = None
        self._in_flight: deque[LogRecord] = deque()
        self._advanced = trio.Event()
        self._records = self._events = self._invalid = self._passes = 0

    def statistics(self) -> MaterializerStatistics:
        lag = max(0, self._log_last - self.applied)
        oldest = self._in_flight[0].timestamp_ns if self._in_flight else None
        seconds = 0.0
        if lag and oldest is not None:
            seconds = max(0.0, time.time() - oldest / 1e9)
        return MaterializerStatistics(
            self.applied, self._log_last, lag, seconds, self._records, self._events,
            self._invalid, self._passes, self.caught_up,
        )

    @property
    def caught_up(self) -> bool:
        return self._start_target is not None and self.applied >= self._start_target

    def observe_last_seq(self, seq: int) -> None:
        """What the read barrier (or anyone) learned of the log's end: for lag figures."""
        self._log_last = max(self._log_last, seq)

    async def wait_applied(self, seq: int) -> None:
        while self.applied < seq:
            await self._advanced.wait()

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.applied = self._saved = await trio.to_thread.run_sync(
            self._datadir.read_stream_position)
        log.info("materializer: resuming after log seq %d", self.applied)
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._save_periodically)
                nursery.start_soon(self._learn_start_target)
                failures = 0  # passes in a row that ended without applying anything
                while True:
                    self._passes += 1
                    start = self.applied
                    try:
                        await self._pass()
                    except* ShardstatsError as group:
                        failures = 0 if self.applied > start else failures + 1
                        log.warning("materializer: pass from seq %d ended: %s; retrying",
                                    self.applied, group.exceptions[0])
                    # A record that keeps failing (a full disk, a bug) is retried ever more
                    # slowly, up to a second apart, not hammered (nor its logs).
                    await trio.sleep(min(1.0, self._retry_delay * 2 ** min(failures, 3)))
        finally:
            with trio.CancelScope(shield=True):
                await self._save()

    async def _learn_start_target(self) -> None:
        """The log's end at start: the node is 'caught up' once it has applied that far."""
        while self._start_target is None:
            try:
                self._start_target = await self._log.last_seq()
                self.observe_last_seq(self._start_target)
            except ShardstatsError as exc:
                log.warning("materializer: cannot read the log's last seq yet: %s", exc)
                await trio.sleep(self._retry_delay)

    async def _pass(self) -> None:
        send, receive = trio.open_memory_channel[_InFlight](self._window)
        self._in_flight.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._collect, receive)
            async with send:
                await self._dispatch(send)

    async def _dispatch(self, send: trio.MemorySendChannel[_InFlight]) -> None:
        prev: dict[int, int] = {}  # hour -> seq handed to it last in this pass
        dispatched = self.applied
        async with self._log.records(self.applied) as records:
            async for record in records:
                if record.seq <= dispatched:
                    continue  # a redelivery
                pendings = await self._hand_over(record, prev)
                self.observe_last_seq(record.seq)
                self._in_flight.append(record)
                await send.send((record, pendings))
                dispatched = record.seq

    async def _hand_over(self, record: LogRecord, prev: dict[int, int]) -> list[Pending[None]]:
        try:
            events = stream.decode(record.data)
        except stream.InvalidRecord as exc:
            self._invalid += 1
            log.error("materializer: skipping log record %d: %s", record.seq, exc)
            return []
        pendings = []
        for hour, group in events.by_hour().items():
            tag = stream.StreamTag(record.seq, prev.get(hour))
            pendings.append(await self._registry.submit_stream(group, tag))
            prev[hour] = record.seq
        self._events += len(events)
        return pendings

    async def _collect(self, receive: trio.MemoryReceiveChannel[_InFlight]) -> None:
        # Not closed on the way out: a failure here must reach the dispatcher as the
        # nursery's cancellation, not as a BrokenResourceError from its next send.
        async for record, pendings in receive:
            for pending in pendings:
                await pending.wait()  # a failure ends the pass (raised to ``run``)
            self._in_flight.popleft()
            self.applied = record.seq
            self._records += 1
            self._advanced.set()
            self._advanced = trio.Event()

    async def _save_periodically(self) -> None:
        while True:
            await trio.sleep(self._save_interval)
            await self._save()

    async def _save(self) -> None:
        applied = self.applied
        if applied == self._saved:
            return
        try:
            await trio.to_thread.run_sync(self._datadir.write_stream_position, applied)
        except OSError as exc:
            log.warning("materializer: could not save the stream position: %s", exc)
            return
        self._saved = applied


def lag_is_healthy(stats: MaterializerStatistics, max_lag_seconds: float) -> bool:
    return stats.caught_up and (math.isinf(max_lag_seconds)
                                or stats.lag_seconds <= max_lag_seconds)

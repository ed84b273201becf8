"""The router: maps an hour to its shard, opens and evicts shards, caches past hours.

State (all touched only from the event loop, so no locks):
- ``_open``: hour -> running ``HourShard`` (LRU order); at most ``max_open_shards``.
- ``_cached``: hour -> read-only ``HourAggregate`` of a closed hour (LRU order); at most
  ``max_cached_hours``.
- ``_known``: hours that have a journal on disk. A GET for any other hour answers zeros
  without touching the disk, so queries never create files.
- ``_busy``: hour -> event set when an open/load/close of that hour finishes.

Rules:
1. An hour is in at most one of ``_open`` and ``_cached``, and while it is in ``_busy``
   nobody else opens, loads or closes it: the one-owner-per-hour invariant.
2. A closing shard leaves ``_open`` before its inbox closes, so no submission can reach a
   closed inbox; the aggregate it leaves behind goes to ``_cached``.
3. The current hour is never evicted for being idle (it is snapshotted periodically instead).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import HOUR_MS, ZERO_COUNTS, EventColumns, HourCounts
from shardstats.errors import Overloaded, ShardstatsError
from shardstats.shards import loader
from shardstats.shards.dictionary import UserDictionary
from shardstats.shards.hour import HourShard
from shardstats.shards.observer import NULL_OBSERVER, Observer
from shardstats.storage.datadir import DataDir

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RegistryLimits:
    max_open_shards: int = 16
    max_cached_hours: int = 128
    inbox_size: int = 4096
    max_batch: int = 4096
    snapshot_interval: float = 30.0
    shard_idle: float = 120.0
    concurrent_loads: int = 4


@dataclass(frozen=True)
class RegistryStatistics:
    open_shards: int
    cached_hours: int
    known_hours: int
    queued: int
    loads: int


class Registry:
    def __init__(
        self,
        datadir: DataDir,
        dictionary: UserDictionary,
        limits: RegistryLimits,
        current_hour: Callable[[], int],
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._datadir = datadir
        self._dictionary = dictionary
        self._limits = limits
        self._current_hour = current_hour
        self.observer = observer
        self._open: OrderedDict[int, HourShard] = OrderedDict()
        self._cached: OrderedDict[int, HourAggregate] = OrderedDict()
        self._known: set[int] = set()
        self._busy: dict[int, trio.Event] = {}
        self._loads = 0
        self._opening = 0
        self._closing = 0
        self._slots_changed = trio.Event()
        # Cold loads of past hours each open a journal (3 descriptors) in a worker thread;
        # a flood of GETs for random hours must not open an unbounded number at once.
        self._load_limiter = trio.CapacityLimiter(limits.concurrent_loads)
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> RegistryStatistics:
        queued = sum(s.statistics().queued for s in self._open.values())
        return RegistryStatistics(
            len(self._open), len(self._cached), len(self._known), queued, self._loads
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the shard tasks; returns after ``aclose`` has closed them all."""
        self._known = await trio.to_thread.run_sync(self._datadir.journal_hours)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._maintain)
            task_status.started()
            await trio.sleep_forever()

    async def aclose(self) -> None:
        """Close every shard (answering what is queued, snapshotting) and stop."""
        async with trio.open_nursery() as nursery:
            for hour in list(self._open):
                nursery.start_soon(self._close, hour)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def preload(self, hours: list[int]) -> None:
        """Recover recent hours eagerly so the first requests after a restart are fast."""
        for hour in hours:
            if hour in self._known:
                try:
                    await self.aggregate(hour)
                except ShardstatsError as exc:
                    # One unreadable hour must not keep the others from being served: it
                    # answers 500 on use, and says why in the log each time.
                    log.error("hour %d is unavailable: %s", hour, exc)
                except Exception:
                    log.exception("hour %d could not be loaded", hour)

    # -- requests --------------------------------------------------------------------------

    async def submit(self, events: EventColumns) -> None:
        """Make events of one hour durable; returns once they are committed."""
        hour = events.timestamps[0] // HOUR_MS
        while True:
            shard = self._open.get(hour)
            if shard is not None:
                self._open.move_to_end(hour)
                try:
                    pending = shard.submit_nowait(events)
                except trio.WouldBlock:
                    raise Overloaded(f"hour {hour} has too many queued requests") from None
                await pending.wait()
                return
            if await self._wait_busy(hour):
                continue
            await self._guarded(hour, self._open_shard)

    async def query(self, hour: int) -> HourCounts:
        aggregate = await self.aggregate(hour)
        return ZERO_COUNTS if aggregate is None else aggregate.counts()

    async def aggregate(self, hour: int) -> HourAggregate | None:
        """The hour's live aggregate (read it before the next await), or None if empty."""
        while True:
            shard = self._open.get(hour)
            if shard is not None:
                self._open.move_to_end(hour)
                return shard.aggregate
            cached = self._cached.get(hour)
            if cached is not None:
                self._cached.move_to_end(hour)
                return cached
            if hour not in self._known:
                return None
            if await self._wait_busy(hour):
                continue
            # Answer from what was loaded even if the cache could not keep it
            # (max_cached_hours = 0, or evicted at once by a flood of other hours).
            return await self._guarded(hour, self._load_cached)

    def has_data(self, hour: int) -> bool:
        return hour in self._known

    # -- opening, loading, closing ---------------------------------------------------------

    async def _wait_busy(self, hour: int) -> bool:
        done = self._busy.get(hour)
        if done is None:
            return False
        await done.wait()
        return True

    async def _guarded(self, hour: int, action: Callable[[int], Awaitable[T]]) -> T:
        done = self._busy[hour] = trio.Event()
        try:
            return await action(hour)
        finally:
            del self._busy[hour]
            done.set()

    async def _open_shard(self, hour: int) -> None:
        assert self._nursery is not None, "registry is not running"
        await self._make_room(hour)
        self._opening += 1
        try:
            await self._start_shard(hour)
        finally:
            self._opening -= 1
            self._notify_slots()

    async def _start_shard(self, hour: int) -> None:
        assert self._nursery is not None
        base = self._cached.pop(hour, None)
        shard = HourShard(
            hour,
            self._datadir,
            self._dictionary,
            inbox_size=self._limits.inbox_size,
            max_batch=self._limits.max_batch,
            snapshot_interval=self._limits.snapshot_interval,
            base=base,
            observer=self.observer,
        )
        try:
            await self._nursery.start(self._run_shard, shard)
        except BaseException:
            if base is not None:
                self._cached[hour] = base
            raise
        self._known.add(hour)
        self._open[hour] = shard
        self._loads += base is None

    async def _run_shard(
        self, shard: HourShard, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await shard.run(task_status=task_status)
        except Exception:
            if not shard.started:
                raise
            # A shard that dies must not take the server with it; its hour reopens on demand.
            log.exception("hour %d: shard stopped unexpectedly", shard.hour)
        finally:
            if self._open.get(shard.hour) is shard:
                del self._open[shard.hour]
                self._cache(shard.hour, shard.aggregate)
                self._notify_slots()

    async def _make_room(self, hour: int) -> None:
        """Close idle shards (LRU, the current hour last) until a slot is free for ``hour``."""
        while len(self._open) + self._opening + self._closing >= self._limits.max_open_shards:
            idle = [h for h in self._open if h not in self._busy]
            if idle:
                current = self._current_hour()
                victim = next((h for h in idle if h != current), idle[0])
                await self._guarded(victim, self._close)
            else:  # every slot is being opened or closed by someone else: wait for a change
                await self._slots_changed.wait()

    def _notify_slots(self) -> None:
        """Wake everyone waiting for a shard slot (they re-check the count)."""
        self._slots_changed.set()
        self._slots_changed = trio.Event()

    async def _guarded_close(self, hour: int) -> None:
        if hour in self._busy:
            await self._wait_busy(hour)
            return
        await self._guarded(hour, self._close)

    async def _close(self, hour: int) -> None:
        shard = self._open.pop(hour, None)
        if shard is None:
            return
        # Until its journal is closed the shard still holds its descriptors: keep its slot.
        self._closing += 1
        try:
            shard.close()
            await shard.closed.wait()
        finally:
            self._closing -= 1
            self._notify_slots()
        self._cache(hour, shard.aggregate)

    async def _load_cached(self, hour: int) -> HourAggregate | None:
        started = time.perf_counter()
        replayed = 0

        def load() -> HourAggregate | None:
            nonlocal replayed
            if not self._datadir.journal_path(hour).exists():
                return None  # pruned by an operator: the hour is empty now
            # A query never writes (nor upgrades) a journal; only a shard does. The connection
            # is writable all the same so that closing it removes the -wal/-shm files.
            journal = self._datadir.open_journal(hour, create=False, upgrade=False)
            try:
                result = loader.load(self._datadir, hour, journal, None)
                replayed = result.replayed
                if result.replayed:
                    log.info("hour %d: replayed %d journal events", hour, result.replayed)
                    try:
                        loader.write_snapshot(self._datadir, result.aggregate, journal.journal_id)
                    except OSError as exc:
                        log.warning("hour %d: snapshot failed: %s", hour, exc)
                return result.aggregate
            finally:
                journal.close(checkpoint=False)

        aggregate = await trio.to_thread.run_sync(load, limiter=self._load_limiter)
        self.observer.load(time.perf_counter() - started, replayed)
        self._loads += 1
        if aggregate is None:
            self._known.discard(hour)
        else:
            self._cache(hour, aggregate)
        return aggregate

    def _cache(self, hour: int, aggregate: HourAggregate) -> None:
        if self._limits.max_cached_hours == 0:
            return
        self._cached[hour] = aggregate
        self._cached.move_to_end(hour)
        while len(self._cached) > self._limits.max_cached_hours:
            self._cached.popitem(last=False)

    # -- housekeeping ----------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Close shards of past hours that have been idle for ``shard_idle`` seconds."""
        period = max(0.05, min(5.0, self._limits.shard_idle / 4))
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            current = self._current_hour()
            for hour, shard in list(self._open.items()):
                if hour < current and now - shard.last_used >= self._limits.shard_idle:
                    await self._guarded_close(hour)

"""The router: maps an hour to its shard, opens and evicts shards, caches past hours.

State (all touched only from the event loop, so no locks):
- ``_open``: hour -> running ``HourShard`` that accepts submissions (LRU order).
- ``_live``: hour -> every shard whose task has not ended (open or closing); at most
  ``max_open_shards + _closing`` together with the opens in progress, of which at most
  ``max_open_shards`` in ``_open`` (rule 10).
- ``_cached``: hour -> frozen ``HourAggregate`` of a closed hour (LRU order); at most
  ``max_cached_hours``.
- ``_known``: hours that have a journal on disk. A GET for any other hour answers zeros
  without touching the disk, so queries never create files.
- ``_busy``: hour -> the open/load/close of that hour in progress (``_Work``).
- ``_wanted``: hour -> how many submissions are waiting for the hour's shard to open.
- ``_unsaved``: hour -> the frozen aggregate of a closed hour that has no proven snapshot on
  disk yet (``core.snapshot``), with its journal id and when it is due to be written.

Rules:
1. An hour is in at most one of ``_open`` and ``_cached``, and while it is in ``_busy``
   nobody else opens, loads or closes it: the one-owner-per-hour invariant.
2. Opens, loads and closes run in tasks the registry owns (``_delegate``); a request only
   waits for their outcome. A cancelled request (a client hung up) abandons its wait, never
   the work, so no bookkeeping is left half-done. Only the registry's own shutdown cancels
   that work, and every await on those paths that holds a resource is shielded. Whoever
   wants the same work on a busy hour (say fifty GETs of one uncached hour) gets its
   outcome instead of starting it again.
3. A shard leaves ``_live`` (and its aggregate reaches ``_cached``) only from its own task,
   once ``run`` has returned and its journal is closed: a new shard of the hour cannot start
   before that (``_start_shard`` refuses loudly, and ``DataDir.journal_writer`` refuses a
   second writer of the journal even if this bookkeeping were wrong).
4. A closing shard leaves ``_open`` before its inbox closes, so no submission can reach a
   closed inbox: the registry takes it out before closing it, and a shard that stops on
   its own (a bug) tells the registry first. An open of the hour then waits for that shard
   to end. A shard stopped by a bug leaves no aggregate behind: the hour is read again
   from its journal, which may hold rows the dead shard never applied.
5. Cached aggregates are frozen: readers may hold them across awaits; a shard that reopens
   the hour works on a copy.
6. The current hour is never evicted for being idle (it is snapshotted periodically instead).
7. A shard is not evicted to make room while submissions that waited for it to open have
   not yet submitted (``_wanted``): otherwise, with many hours wanted at once, the waiters
   for slots evict each new shard before its requesters use it and every hour reopens
   over and over. Those requesters submit as soon as they run, so the pin is short.
8. Snapshots are a cache, so closing a shard writes none: its aggregate stays in memory
   (``_cached``) and is recorded in ``_unsaved``. One task (``_write_snapshots``) writes
   them off every request's path: an aggregate the cache has dropped at once (it is kept in
   ``_unsaved`` until written, at most ``max_open_shards`` of them: opens and loads wait for
   room beyond that), the others once their journal has settled (``SETTLE_NS``), and all of
   them on shutdown. A kill -9 loses only this cache: loads replay the journal tail.
9. A snapshot's proof (the journal file's state) is taken only while the hour is busy with
   that very check, its journal closed and no shard running: so the file then holds exactly
   the rows of the aggregate recorded for it. The snapshot itself is written after the hour
   is free again; a shard that changes the journal meanwhile changes the file's state, which
   the proof then no longer matches. Loads try the proven snapshot first (no SQLite); any
   mismatch means opening the journal, as before, and queueing a proven snapshot.
10. An open that needs a slot starts the victim's close and does not wait for it: closing
   the journal (SQLite checkpoints it, two fsyncs) runs in a task of the registry's own while
   the open goes on. Up to ``_closing`` closes may be under way beside ``max_open_shards``
   open hours, so the journals open at once stay bounded by the sum; past it, opens wait.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import trio

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import HOUR_MS, ZERO_COUNTS, EventColumns, HourCounts
from shardstats.core.stream import StreamTag
from shardstats.errors import NotReady, Overloaded, ShardstatsError
from shardstats.shards import loader
from shardstats.shards.dictionary import UserDictionary
from shardstats.shards.failures import report_failure
from shardstats.shards.hour import HourShard
from shardstats.shards.observer import NULL_OBSERVER, Observer
from shardstats.shards.pending import Pending
from shardstats.storage.datadir import DataDir

log = logging.getLogger(__name__)
T = TypeVar("T")


_SHUTDOWN_WRITERS = 4  # snapshots written at once on shutdown


def _due() -> float:
    """When an unsaved aggregate is written unless the cache drops it first: once its
    journal has settled, so that the snapshot can carry a proof."""
    return trio.current_time() + codec.SETTLE_NS / 1e9 + 0.1


class _Retry:
    """Returned by ``_delegate`` when it waited for someone else's work on the hour."""


_RETRY = _Retry()


@dataclass(eq=False)
class _Work:
    """An open, load or close of one hour in progress, and its outcome once it has one."""

    action: Callable[[int], Awaitable[Any]]
    outcome: Pending[Any] = field(default_factory=Pending)
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False)
class _Unsaved:
    """An aggregate of a closed hour whose proven snapshot is still to be written."""

    aggregate: HourAggregate  # frozen
    journal_id: bytes
    due: float  # trio time


@dataclass(frozen=True)
class RegistryLimits:
    max_open_shards: int = 64
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
    opens: int
    unsaved: int
    snapshots: int


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
        self._live: dict[int, HourShard] = {}
        self._cached: OrderedDict[int, HourAggregate] = OrderedDict()
        self._known: set[int] = set()
        self._busy: dict[int, _Work] = {}
        self._wanted: dict[int, int] = {}
        self._unsaved: OrderedDict[int, _Unsaved] = OrderedDict()
        self._snapshot_work = trio.Event()  # set when ``_unsaved`` changes or on shutdown
        self._unsaved_room = trio.lowlevel.ParkingLot()  # woken when one is written
        self._snapshots = 0
        self._saving: set[int] = set()  # hours whose snapshot is being written
        self._loads = 0
        self._opens = 0
        self._opening = 0
        self._stopping = False
        self._waiting_for_room: deque[trio.Event] = deque()  # opens waiting, oldest first
        # Cold loads of past hours each open a journal (3 descriptors) in a worker thread;
        # a flood of GETs for random hours must not open an unbounded number at once.
        self._load_limiter = trio.CapacityLimiter(limits.concurrent_loads)
        # Rule 10: evictions under way beside the open hours (each holds its journal's
        # descriptors until closed).
        self._closing = max(1, limits.max_open_shards // 8)
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> RegistryStatistics:
        queued = sum(s.statistics().queued for s in self._open.values())
        return RegistryStatistics(
            len(self._open), len(self._cached), len(self._known), queued, self._loads,
            self._opens, len(self._unsaved), self._snapshots,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the shard tasks; returns after ``aclose`` has closed them all."""
        self._known = await trio.to_thread.run_sync(self._datadir.journal_hours)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._maintain)
            nursery.start_soon(self._write_snapshots)
            task_status.started()
            await trio.sleep_forever()

    async def aclose(self) -> None:
        """Close every shard (answering what is queued, snapshotting) and stop."""
        self._stopping = True  # no new opens or loads from here on
        while self._busy:  # let opens, loads and closes in progress finish
            await next(iter(self._busy.values())).done.wait()
        async with trio.open_nursery() as nursery:
            for hour in list(self._open):
                nursery.start_soon(self._close_when_free, hour)
        # Every aggregate in memory is now unsaved or saved; write the unsaved ones, a few
        # at a time (each write waits for two fsyncs).
        async with trio.open_nursery() as nursery:
            for _ in range(_SHUTDOWN_WRITERS):
                nursery.start_soon(self._save_all_unsaved)
        while self._unsaved:  # the background writer's last one
            self._snapshot_work.set()
            await self._unsaved_room.park()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def preload(self, hours: list[int]) -> None:
        """Recover recent hours eagerly so the first requests after a restart are fast."""
        for hour in hours:
            if hour in self._known:
                try:
                    await self._aggregate(hour)
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
            if shard is None:
                shard = await self._opened(hour)
            # No checkpoint from here to the submission: the shard cannot close in between.
            self._open.move_to_end(hour)
            try:
                pending = shard.submit_nowait(events)
            except trio.WouldBlock:
                raise Overloaded(f"hour {hour} has too many queued requests") from None
            except trio.ClosedResourceError:  # rule 4 makes this unreachable; if not, retry
                log.error("hour %d: an open shard had a closed inbox", hour)
                await shard.closed.wait()
                continue
            await pending.wait()
            return

    async def _opened(self, hour: int) -> HourShard:
        """Wait until the hour's shard is open, keeping it from eviction (rule 7) until the
        caller's next checkpoint, by which it has submitted."""
        self._wanted[hour] = self._wanted.get(hour, 0) + 1
        try:
            while (shard := self._open.get(hour)) is None:
                await self._delegate(hour, self._open_shard)
            return shard
        finally:
            if self._wanted[hour] == 1:
                del self._wanted[hour]
                self._notify_slots()
            else:
                self._wanted[hour] -= 1

    async def submit_stream(self, events: EventColumns, tag: StreamTag) -> Pending[None]:
        """Queue one hour's part of a log record (cluster mode) behind what was queued for
        the hour before, waiting for room; returns the pending commit. The materializer
        calls this from one task, in log order, which is what keeps each hour's records in
        order (``core.stream``)."""
        hour = events.timestamps[0] // HOUR_MS
        while True:
            shard = self._open.get(hour) or await self._opened(hour)
            self._open.move_to_end(hour)
            try:
                return await shard.submit_stream(events, tag)
            except trio.ClosedResourceError:  # evicted while we waited for room
                continue

    async def query(self, hour: int) -> HourCounts:
        aggregate = await self._aggregate(hour)
        return ZERO_COUNTS if aggregate is None else aggregate.counts()

    async def view(self, hour: int) -> HourAggregate | None:
        """A frozen, consistent aggregate of the hour (safe to hold), or None if empty."""
        aggregate = await self._aggregate(hour)
        return None if aggregate is None else aggregate.view()

    async def _aggregate(self, hour: int) -> HourAggregate | None:
        """The hour's aggregate, live if its shard is open (read it before the next await)."""
        while True:
            shard = self._open.get(hour)
            if shard is not None:
                self._open.move_to_end(hour)
                return shard.aggregate
            cached = self._cached.get(hour)
            if cached is not None:
                self._cached.move_to_end(hour)
                return cached
            unsaved = self._unsaved.get(hour)
            if unsaved is not None:  # dropped by the cache, its snapshot not yet written
                return unsaved.aggregate
            if hour not in self._known:
                return None
            # Answer from what was loaded even if the cache could not keep it
            # (max_cached_hours = 0, or evicted at once by a flood of other hours).
            loaded = await self._delegate(hour, self._load_cached)
            if not isinstance(loaded, _Retry):
                return loaded

    def has_data(self, hour: int) -> bool:
        return hour in self._known

    # -- owned work: opening, loading, closing ---------------------------------------------

    async def _delegate(
        self, hour: int, action: Callable[[int], Awaitable[T]]
    ) -> T | _Retry:
        """Run ``action(hour)`` in a task the registry owns and wait for its result. If the
        hour is busy with the same action, its result is ours too; if with another, wait for
        it and return ``_RETRY``. Cancelling the caller abandons the wait only."""
        work = self._busy.get(hour)
        if work is not None:
            await work.done.wait()
            if work.action == action:
                return cast("T", work.outcome.result())
            return _RETRY
        if self._stopping or self._nursery is None:
            raise NotReady("shutting down")
        work = self._busy[hour] = _Work(action)  # claimed now: nobody starts a second one
        self._nursery.start_soon(self._owned, hour, work)
        return cast("T", await work.outcome.wait())

    async def _owned(self, hour: int, work: _Work) -> None:
        pending = work.outcome
        try:
            pending.set(await work.action(hour))
        except ShardstatsError as exc:
            pending.fail(exc)
        except Exception as exc:
            # A bug: the waiter re-raises it (and it is logged there); if the waiter is
            # gone, log it here so it is not lost. It must not stop the registry's nursery.
            pending.fail(exc)
            if pending.abandoned:
                log.exception("hour %d: unexpected error", hour)
        finally:
            if not pending.done:  # cancelled by the registry's own shutdown
                pending.fail(NotReady("shutting down"))
            self._free(hour, work)

    async def _guarded(self, hour: int, action: Callable[[int], Awaitable[T]]) -> T:
        """Run ``action`` in the calling (registry-owned) task with the hour marked busy."""
        assert hour not in self._busy, f"hour {hour} is already busy"
        work = self._busy[hour] = _Work(action)
        try:
            result = await action(hour)
            work.outcome.set(result)
            return result
        except BaseException as exc:
            work.outcome.fail(exc if isinstance(exc, Exception) else NotReady("shutting down"))
            raise
        finally:
            self._free(hour, work)

    def _free(self, hour: int, work: _Work) -> None:
        del self._busy[hour]
        work.done.set()
        if hour in self._unsaved:  # the writer skipped it while it was busy
            self._snapshot_work.set()

    async def _open_shard(self, hour: int) -> None:
        dying = self._live.get(hour)
        if dying is not None:  # stopped on its own (rule 4) and still closing its journal
            await dying.closed.wait()
        await self._room_for_unsaved()
        await self._make_room(hour)
        self._opening += 1
        try:
            await self._start_shard(hour)
        finally:
            self._opening -= 1
            self._notify_slots()

    async def _start_shard(self, hour: int) -> None:
        assert self._nursery is not None
        if hour in self._live:
            raise RuntimeError(f"hour {hour}: a shard is still running; refusing a second one")
        base = self._cached.pop(hour, None)
        unsaved = self._unsaved.pop(hour, None)  # the shard's aggregate will be newer
        if base is None and unsaved is not None:
            base = unsaved.aggregate
        shard = HourShard(
            hour,
            self._datadir,
            self._dictionary,
            inbox_size=self._limits.inbox_size,
            max_batch=self._limits.max_batch,
            snapshot_interval=self._limits.snapshot_interval,
            base=base,
            observer=self.observer,
            on_stop=self._stopping_shard,
        )
        self._live[hour] = shard
        try:
            await self._nursery.start(self._run_shard, shard)
        except BaseException:
            if unsaved is not None and hour not in self._unsaved:
                self._unsaved[hour] = unsaved
            if base is not None and hour not in self._cached:
                self._cache(hour, base)
            raise
        self._known.add(hour)
        self._open[hour] = shard
        self._opens += 1
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
            self._retire(shard)

    def _stopping_shard(self, shard: HourShard) -> None:
        """Called by a shard before its inbox closes (rule 4)."""
        if self._open.get(shard.hour) is shard:
            del self._open[shard.hour]

    def _retire(self, shard: HourShard) -> None:
        """The shard's task has ended (its journal is closed): free its slot, keep its
        aggregate unless a bug stopped it. Runs in the shard's own task, so no caller's
        cancellation can skip it."""
        hour = shard.hour
        if self._live.get(hour) is shard:
            del self._live[hour]
        if self._open.get(hour) is shard:
            del self._open[hour]
        # After a commit reported as failed the file may hold rows the aggregate lacks (the
        # shard folds them in before its next commit): then the hour is read again instead.
        if shard.started and shard.failed is None and not shard.diverged:
            aggregate = shard.aggregate.freeze()
            self._unsave(hour, _Unsaved(aggregate, shard.journal_id, _due()))
            self._cache(hour, aggregate)
        self._notify_slots()

    async def _make_room(self, hour: int) -> None:
        """Evict idle shards (LRU, the current hour last) until a slot is free for ``hour``
        (rule 10)."""
        limits = self._limits
        while True:
            if len(self._open) + self._opening < limits.max_open_shards:
                if len(self._live) + self._opening < limits.max_open_shards + self._closing:
                    return
                await self._wait_for_room()  # enough closes under way: wait for one to end
                continue
            idle = [h for h in self._open if h not in self._busy and h not in self._wanted]
            if idle:
                current = self._current_hour()
                self._evict(next((h for h in idle if h != current), idle[0]))
            else:  # every slot is being opened, closed or used: wait for a change
                await self._wait_for_room()

    def _evict(self, hour: int) -> None:
        """Close the hour's shard in a task of the registry's own; the hour stays busy until
        its journal is closed and its aggregate cached (rule 3)."""
        assert self._nursery is not None and hour not in self._busy
        work = self._busy[hour] = _Work(self._close)
        shard = self._open.pop(hour)  # rule 4: out of ``_open`` before its inbox closes
        shard.close()
        self._nursery.start_soon(self._evicted, hour, shard, work)

    async def _evicted(self, hour: int, shard: HourShard, work: _Work) -> None:
        try:
            await shard.closed.wait()  # ``_retire`` ran in the shard's task right after
            work.outcome.set(None)
        finally:
            if not work.outcome.done:  # cancelled by the registry's own shutdown
                work.outcome.fail(NotReady("shutting down"))
            self._free(hour, work)

    async def _wait_for_room(self) -> None:
        # One waiter is woken per change: each change (a shard retired, opened or no longer
        # wanted) frees one slot or one victim, and waking all of them made every change
        # cost a pass over every waiting open (quadratic with hundreds of hours at once).
        wake = trio.Event()
        self._waiting_for_room.append(wake)
        try:
            await wake.wait()
        finally:
            if not wake.is_set():  # cancelled (shutdown): a later change is not ours
                self._waiting_for_room.remove(wake)

    def _notify_slots(self) -> None:
        """Wake the longest waiting open, if any (it re-checks the count)."""
        if self._waiting_for_room:
            self._waiting_for_room.popleft().set()

    async def _close(self, hour: int) -> None:
        shard = self._open.pop(hour, None)
        if shard is None:
            return
        shard.close()
        await shard.closed.wait()
        # ``_retire`` ran in the shard's task right after ``closed`` was set.

    async def _close_when_free(self, hour: int) -> None:
        while (work := self._busy.get(hour)) is not None:
            await work.done.wait()
        await self._guarded(hour, self._close)

    async def _load_cached(self, hour: int) -> HourAggregate | None:
        await self._room_for_unsaved()
        started = time.perf_counter()
        replayed = 0

        def load() -> tuple[HourAggregate, bytes | None] | None:
            """The aggregate, and the journal id when it still needs a proven snapshot."""
            nonlocal replayed
            if not self._datadir.journal_path(hour).exists():
                return None  # pruned by an operator: the hour is empty now
            aggregate = loader.proven(self._datadir, hour)
            if aggregate is not None:  # no SQLite: the snapshot matches the journal file
                return aggregate.freeze(), None
            # A query never writes (nor upgrades) a journal; only a shard does. The connection
            # is writable all the same so that closing it removes the -wal/-shm files.
            journal = self._datadir.open_journal(hour, create=False, upgrade=False)
            try:
                result = loader.load(self._datadir, hour, journal, None)
                replayed = result.replayed
                if result.replayed:
                    log.info("hour %d: replayed %d journal events", hour, result.replayed)
                return result.aggregate.freeze(), journal.journal_id or None
            finally:
                journal.close(checkpoint=False)

        loaded = await trio.to_thread.run_sync(load, limiter=self._load_limiter)
        self.observer.load(time.perf_counter() - started, replayed)
        self._loads += 1
        if loaded is None:
            self._known.discard(hour)
            return None
        aggregate, journal_id = loaded
        self._cache(hour, aggregate)
        if journal_id is not None:  # the snapshot was missing, stale or unproven: write one
            # Not at once: the first reads after a restart come in bursts, and a load that
            # opens SQLite (creating -wal and -shm files) waits behind fsyncs beside it.
            self._unsave(hour, _Unsaved(aggregate, journal_id, _due()))
        return aggregate

    def _cache(self, hour: int, aggregate: HourAggregate) -> None:
        aggregate.freeze()
        if self._limits.max_cached_hours == 0:
            self._snapshot_work.set()  # an unsaved one of this hour is due now
            return
        self._cached[hour] = aggregate
        self._cached.move_to_end(hour)
        while len(self._cached) > self._limits.max_cached_hours:
            dropped, _ = self._cached.popitem(last=False)
            if dropped in self._unsaved:
                self._snapshot_work.set()  # due now: only ``_unsaved`` holds it

    # -- deferred snapshots (rules 8 and 9) ------------------------------------------------

    def _unsave(self, hour: int, entry: _Unsaved) -> None:
        self._unsaved.pop(hour, None)
        self._unsaved[hour] = entry  # newest last
        self._snapshot_work.set()

    def _homeless(self) -> int:
        """Unsaved aggregates that only ``_unsaved`` holds (the cache has dropped them) and
        that the writer may take now. An hour being opened is left out: the open takes its
        aggregate over, and the writer skips busy hours, so counting them could make opens
        wait for writes that wait for those opens."""
        return sum(1 for h in self._unsaved
                   if h not in self._cached and h not in self._live and h not in self._busy)

    async def _room_for_unsaved(self) -> None:
        """Back-pressure for rule 8: memory for aggregates the cache dropped is bounded."""
        while self._homeless() > self._limits.max_open_shards and not self._stopping:
            self._snapshot_work.set()
            await self._unsaved_room.park()

    def _next_unsaved(self, now: float) -> tuple[int | None, float]:
        """The hour to write next (dropped from the cache first, then the oldest due) and,
        when none is due, when to look again."""
        wake = float("inf")
        first_due = None
        for hour, entry in self._unsaved.items():
            if hour in self._busy or hour in self._live or hour in self._saving:
                continue  # a shard owns the hour now, or it is being opened, loaded or saved
            if self._stopping or (hour not in self._cached):
                return hour, now
            if first_due is None:
                if entry.due <= now:
                    first_due = hour
                else:
                    wake = min(wake, entry.due)
        return first_due, wake

    async def _write_snapshots(self) -> None:
        while True:
            hour, wake = self._next_unsaved(trio.current_time())
            if hour is None:
                self._snapshot_work = trio.Event()
                with trio.move_on_at(wake):
                    await self._snapshot_work.wait()
                if self._stopping and self._unsaved and all(
                        h in self._busy or h in self._live or h in self._saving
                        for h in self._unsaved):
                    await trio.sleep(0.01)  # closes or other writes still in progress
                continue
            await self._save_unsaved(hour)

    async def _save_all_unsaved(self) -> None:
        """On shutdown, beside ``_write_snapshots``: write until nothing is left to take."""
        while (hour := self._next_unsaved(trio.current_time())[0]) is not None:
            await self._save_unsaved(hour)

    async def _save_unsaved(self, hour: int) -> None:
        entry = self._unsaved[hour]
        self._saving.add(hour)
        try:
            await self._save(hour, entry)
        except Exception as exc:
            # The journal has it all; the next load reads the tail. A bug in encoding must
            # not stop the server: snapshots are a cache.
            report_failure(exc, log, f"hour {hour}: snapshot", logging.WARNING)
        finally:
            self._saving.discard(hour)
            if self._unsaved.get(hour) is entry:
                del self._unsaved[hour]
            else:  # a newer one, skipped while this was written
                self._snapshot_work.set()
            self._unsaved_room.unpark_all()

    async def _save(self, hour: int, entry: _Unsaved) -> None:
        started = time.perf_counter()
        # Rule 9: the proof is taken while nobody can open the hour.
        proof = await self._guarded(
            hour, lambda h: trio.to_thread.run_sync(self._datadir.settled_journal_state, h))
        data = codec.encode(entry.aggregate, entry.journal_id, proof)
        try:
            await trio.to_thread.run_sync(self._datadir.write_snapshot, hour, data)
        except BaseException:
            self.observer.snapshot(time.perf_counter() - started, False)
            raise
        self.observer.snapshot(time.perf_counter() - started, True)
        self._snapshots += 1

    # -- housekeeping ----------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Close shards of past hours that have been idle for ``shard_idle`` seconds."""
        period = max(0.05, min(5.0, self._limits.shard_idle / 4))
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            current = self._current_hour()
            for hour, shard in list(self._open.items()):
                # An earlier close awaited: the hour may have closed and reopened since.
                if (self._open.get(hour) is shard and hour < current
                        and hour not in self._busy and hour not in self._wanted
                        and now - shard.last_used >= self._limits.shard_idle):
                    await self._guarded(hour, self._close)

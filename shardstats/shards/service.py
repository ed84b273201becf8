"""The service: data-dir lock, user dictionary and hour registry, started and stopped together.

The HTTP layer talks only to this object: ``submit`` (durable ingest), ``query`` (counts of an
hour), ``ready`` and ``statistics``. Its methods are message-shaped (events in,
acknowledgements out) so an ingest process could one day sit in front of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio
from pyroaring import BitMap

from shardstats.clock import Clock, SystemClock
from shardstats.cluster.barrier import Consistency
from shardstats.cluster.log import EventLog
from shardstats.cluster.node import ClusterNode, LogFactory, connect_jetstream, node_name_for
from shardstats.config import Settings
from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import HOUR_MS, Event, EventColumns, HourCounts
from shardstats.core.ranges import RangeQuery, Segment, combine
from shardstats.core.validation import Limits
from shardstats.errors import NotReady, ShardstatsError
from shardstats.shards.dictionary import DictionaryStatistics, UserDictionary
from shardstats.shards.observer import NULL_OBSERVER, Observer
from shardstats.shards.registry import Registry, RegistryLimits, RegistryStatistics
from shardstats.storage.datadir import DataDir

log = logging.getLogger(__name__)


async def _union_in_slices(parts: list[HourAggregate], size: int = 32) -> HourCounts:
    users = BitMap()
    clicks = impressions = 0
    for start in range(0, len(parts), size):
        chunk = parts[start : start + size]
        users |= BitMap.union(*(p.users for p in chunk))
        clicks += sum(p.clicks for p in chunk)
        impressions += sum(p.impressions for p in chunk)
        await trio.lowlevel.checkpoint()
    return HourCounts(len(users), clicks, impressions)


@dataclass(frozen=True)
class ServiceStatistics:
    ready: bool
    recovery_seconds: float | None
    registry: RegistryStatistics
    dictionary: DictionaryStatistics


class Service:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        datadir: DataDir | None = None,
        observer: Observer = NULL_OBSERVER,
        log_factory: LogFactory | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        # ``datadir`` is the storage seam: tests pass a subclass that injects faults.
        self.datadir = datadir or DataDir(settings.data_path)
        self.limits = Limits(
            max_user_bytes=settings.max_user_bytes,
            accept_past_ms=settings.accept_past_seconds * 1000,
            accept_future_ms=settings.accept_future_seconds * 1000,
        )
        self.dictionary = UserDictionary(self.datadir, settings.user_cache_size,
                                         tail_size=settings.user_index_tail)
        self.registry = Registry(
            self.datadir,
            self.dictionary,
            RegistryLimits(
                max_open_shards=settings.max_open_shards,
                max_cached_hours=settings.max_cached_hours,
                inbox_size=settings.inbox_size,
                max_batch=settings.max_commit_events,
                snapshot_interval=settings.snapshot_interval_seconds,
                shard_idle=settings.shard_idle_seconds,
            ),
            self.current_hour,
            observer,
        )
        self.ready = False
        self._users_checked = False
        self._ready_event = trio.Event()
        self.recovery_seconds: float | None = None
        self._stop = trio.Event()
        self._stopped = trio.Event()
        # Cluster mode (``cluster_nats_urls`` set): the log is the truth; writes go through
        # the node's publisher and reach the shards through its materializer.
        self.cluster: ClusterNode | None = None
        if settings.cluster_mode or log_factory is not None:
            self.cluster = self._cluster_node(settings, log_factory)

    def _cluster_node(self, settings: Settings, log_factory: LogFactory | None) -> ClusterNode:
        if log_factory is None:
            settings_ = settings

            async def log_factory_() -> EventLog:
                return await connect_jetstream(settings_)

            log_factory = log_factory_
        name = settings.node_name or node_name_for(settings)
        return ClusterNode(settings, self.registry, self.datadir, log_factory, name)

    def current_hour(self) -> int:
        return self.clock.now_ms() // HOUR_MS

    def acquire_lock(self) -> None:
        """Take the data-dir lock now (raises ``DataDirLocked``) and check that the user
        dictionary is not older than its journals (raises ``DictionaryBehind``, the lock
        released); ``run`` reuses both."""
        self.datadir.prepare()
        self.datadir.lock.acquire()
        self.datadir.remove_stale_temporaries()
        if not self._users_checked:
            try:
                self.datadir.check_users()
            except BaseException:
                self.datadir.lock.release()
                raise
            self._users_checked = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lock, recover, serve until ``shutdown``; ``started`` fires before recovery."""
        started = time.monotonic()
        await trio.to_thread.run_sync(self.acquire_lock)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.dictionary.run)
                await nursery.start(self.registry.run)
                if self.cluster is not None:
                    await nursery.start(self.cluster.run)
                task_status.started()
                current = self.current_hour()
                recent = [current - i for i in range(self.settings.preload_hours)]
                await self.registry.preload([current + 1, *recent])
                self.recovery_seconds = time.monotonic() - started
                self.ready = True
                self._ready_event.set()
                log.info("ready in %.3f s", self.recovery_seconds)
                await self._stop.wait()
                self.ready = False
                stopping = time.monotonic()
                if self.cluster is not None:
                    await self.cluster.aclose()
                open_hours = self.registry.statistics().open_shards
                await self.registry.aclose()
                self.dictionary.close()
                log.info("stopped: %d open hours snapshotted and closed in %.3f s",
                         open_hours, time.monotonic() - stopping)
        finally:
            self.datadir.lock.release()
            self._stopped.set()

    async def wait_ready(self) -> None:
        await self._ready_event.wait()

    async def shutdown(self) -> None:
        """Answer what is queued, snapshot every open hour, release the lock."""
        self._stop.set()
        await self._stopped.wait()

    async def submit(self, event: Event) -> None:
        if not self.ready:
            raise NotReady("recovering; retry shortly")
        if self.cluster is not None:
            await self.cluster.publish(EventColumns.of([event]))
        else:
            await self.registry.submit(EventColumns.of([event]))

    async def read_barrier(self) -> Consistency:
        """Cluster mode: wait until this node holds every event acknowledged anywhere before
        now (``cluster.barrier``); embedded mode: always fresh."""
        if self.cluster is None:
            return Consistency.FRESH
        if not self.ready:
            raise NotReady("recovering; retry shortly")
        return await self.cluster.read_barrier()

    async def submit_batch(self, events: EventColumns) -> dict[int, ShardstatsError | None]:
        """Commit events of any hours (one submission per hour, concurrently); the outcome
        of each hour: None when durable, else the error every event of that hour got."""
        if not self.ready:
            raise NotReady("recovering; retry shortly")
        by_hour = events.by_hour()
        outcome: dict[int, ShardstatsError | None] = {}

        submit = self.registry.submit if self.cluster is None else self.cluster.publish

        async def one(hour: int, group: EventColumns) -> None:
            try:
                await submit(group)
                outcome[hour] = None
            except ShardstatsError as exc:
                outcome[hour] = exc

        async with trio.open_nursery() as nursery:
            for hour, group in by_hour.items():
                nursery.start_soon(one, hour, group)
        return outcome

    async def range_counts(self, query: RangeQuery) -> tuple[HourCounts, list[Segment]]:
        """Exact totals and per-step counts over a range of hours.

        Unions run on the event loop in slices (pyroaring holds the GIL, so a worker thread
        would not let other requests run anyway); between slices other tasks get a turn.
        Every hour is read from one frozen view taken when it is reached, so ``total`` and
        the series always describe the same events even while commits and loads go on.
        """
        if not self.ready:
            raise NotReady("recovering; retry shortly")
        segments: list[Segment] = []
        partials: list[HourAggregate] = []
        for hours in query.segments():
            aggregates = []
            for hour in hours:
                if self.registry.has_data(hour):
                    aggregate = await self.registry.view(hour)
                    if aggregate is not None:
                        aggregates.append(aggregate)
            if len(hours) == 1:  # an hour is its own partial: no union, no copy
                counts = aggregates[0].counts() if aggregates else HourCounts()
                partials.extend(aggregates)
            else:
                counts, users = combine(aggregates)
                partials.append(HourAggregate(hours.start, counts.clicks, counts.impressions,
                                              users))
                await trio.lowlevel.checkpoint()
            segments.append(Segment(hours.start, counts))
        total = await _union_in_slices(partials)
        return total, segments

    async def query(self, hour: int) -> HourCounts:
        if not self.ready:
            raise NotReady("recovering; retry shortly")
        return await self.registry.query(hour)

    def statistics(self) -> ServiceStatistics:
        return ServiceStatistics(
            self.ready,
            self.recovery_seconds,
            self.registry.statistics(),
            self.dictionary.statistics(),
        )

"""A cluster node's moving parts, started and stopped together: the log connection, the
publisher (write path), the materializer (log -> hour shards) and the read barrier.

The service owns one ``ClusterNode`` when ``cluster_nats_urls`` is set and talks to it only
through ``publish``, ``read_barrier`` and ``statistics``; the log behind it is any
``EventLog`` (NATS JetStream in production, the in-memory log in tests). Stopping: the
publisher stops taking requests and finishes what it has sent; then the materializer saves
its position and the log connection closes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from shardstats.cluster.barrier import Consistency, ReadBarrier
from shardstats.cluster.log import EventLog, LogStatistics
from shardstats.cluster.materializer import Materializer, MaterializerStatistics
from shardstats.cluster.publisher import Publisher, PublisherStatistics
from shardstats.config import Settings
from shardstats.core.events import EventColumns
from shardstats.errors import NotReady
from shardstats.shards.registry import Registry
from shardstats.storage.datadir import DataDir

log = logging.getLogger("shardstats.cluster")

LogFactory = Callable[[], Awaitable[EventLog]]


@dataclass(frozen=True)
class ClusterStatistics:
    node_name: str
    log: LogStatistics
    publisher: PublisherStatistics
    materializer: MaterializerStatistics
    barrier_calls: int
    barrier_stale: int
    barrier_behind: int


async def connect_jetstream(settings: Settings) -> EventLog:
    from shardstats.cluster.jetstream import JetStreamConfig, JetStreamLog  # nats only here

    return await JetStreamLog.connect(JetStreamConfig.from_settings(settings))


def node_name_for(settings: Settings) -> str:
    from shardstats.cluster.jetstream import default_node_name

    return settings.node_name or default_node_name(settings.bind)


class ClusterNode:
    def __init__(self, settings: Settings, registry: Registry, datadir: DataDir,
                 log_factory: LogFactory, node_name: str) -> None:
        self._settings = settings
        self._registry = registry
        self._datadir = datadir
        self._log_factory = log_factory
        self.node_name = node_name
        self._log: EventLog | None = None
        self.publisher: Publisher | None = None
        self.materializer: Materializer | None = None
        self.barrier: ReadBarrier | None = None
        self._stop = trio.Event()
        self._done = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (bounded by the log's own timeouts), start everything, run until
        ``stop``. Raises what the connection raises (the service then fails to start)."""
        try:
            await self._run(task_status)
        finally:
            self._done.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        settings = self._settings
        async with await self._log_factory() as log_:
            self._log = log_
            self.publisher = Publisher(log_, self.node_name, max_events=settings.max_commit_events,
                                       inbox_size=settings.inbox_size)
            self.materializer = Materializer(log_, self._registry, self._datadir)
            self.barrier = ReadBarrier(log_, self.materializer,
                                       settings.cluster_read_barrier_timeout_seconds)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.materializer.run)
                await nursery.start(self.barrier.run)
                async with trio.open_nursery() as writers:
                    await writers.start(self.publisher.run)
                    task_status.started()
                    log.info("cluster node %s: publishing to and materializing the log",
                             self.node_name)
                    await self._stop.wait()
                    self.publisher.close()  # answers what is in flight, then returns
                nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Stop publishing (answering what is in flight), stop materializing, disconnect."""
        self._stop.set()
        await self._done.wait()

    async def publish(self, events: EventColumns) -> None:
        if self.publisher is None:
            raise NotReady("cluster node is not running")
        await self.publisher.publish(events)

    async def read_barrier(self) -> Consistency:
        if self.barrier is None or self._stop.is_set():
            raise NotReady("cluster node is not running")
        return await self.barrier.wait()

    def statistics(self) -> ClusterStatistics | None:
        if self._log is None or self.publisher is None or self.materializer is None \
                or self.barrier is None:
            return None
        return ClusterStatistics(
            self.node_name, self._log.statistics(), self.publisher.statistics(),
            self.materializer.statistics(), self.barrier.calls, self.barrier.stale,
            self.barrier.behind,
        )

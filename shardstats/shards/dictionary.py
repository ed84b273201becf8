"""The user-dictionary actor: the one task that assigns user ids.

Shards ask it for the ids of a batch's users. Known users are answered from a bounded
in-memory cache without a message; unknown ones go through the inbox, and the actor
assigns and commits the ids of everything queued in one durable transaction (group commit)
before replying. See ``shardstats.storage.users`` for why ids are committed first.

The store's name index needs upkeep (its in-memory tail written out as a run, runs merged):
the actor runs it in a task of its own, in a worker thread beside the commits, so no batch
waits for it. The store is closed or replaced only when no upkeep is running.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import operator
from dataclasses import dataclass

import trio

from shardstats.shards.failures import report_failure
from shardstats.shards.mark_keeper import MarkKeeper
from shardstats.shards.pending import Pending
from shardstats.storage.datadir import DataDir
from shardstats.storage.users import TAIL_SIZE, UserStore

log = logging.getLogger(__name__)

_Request = tuple[list[str], Pending[dict[str, int]]]


@dataclass(frozen=True)
class DictionaryStatistics:
    cached_users: int
    commits: int
    failed_commits: int
    index_upkeeps: int = 0


class UserDictionary:
    def __init__(self, datadir: DataDir, cache_size: int, inbox_size: int = 1024, *,
                 tail_size: int = TAIL_SIZE) -> None:
        self._datadir = datadir
        self._tail_size = tail_size
        self._cache: dict[str, int] = {}
        self._cache_size = cache_size
        self._send, self._receive = trio.open_memory_channel[_Request](inbox_size)
        self._store: UserStore | None = None
        self._commits = 0
        self._failed = 0
        self._upkeeps = 0
        self._upkeep_running = False
        self._closing = False
        self._upkeep_done = trio.Event()
        self._upkeep_done.set()
        self._nursery: trio.Nursery | None = None
        self.marks = MarkKeeper(datadir)  # users.issued: see shardstats.storage.issued

    def statistics(self) -> DictionaryStatistics:
        return DictionaryStatistics(len(self._cache), self._commits, self._failed,
                                    self._upkeeps)

    async def uids_for(self, names: list[str]) -> list[int]:
        """The id of each name (``result[i]`` is the id of ``names[i]``), assigning and
        durably committing ids for names never seen before."""
        uids = list(map(self._cache.get, names))  # a C loop: a batch is mostly known users
        if None in uids:
            # Ids are >= 1: ``not uid`` marks the names the cache lacks (C loops).
            missing = list(dict.fromkeys(itertools.compress(names, map(operator.not_, uids))))
            pending: Pending[dict[str, int]] = Pending()
            await self._send.send((missing, pending))
            assigned = await pending.wait()
            uids = [assigned[name] if uid is None else uid
                    for name, uid in zip(names, uids, strict=True)]
        return uids  # type: ignore[return-value]  # every None was replaced just above

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Shielded: a cancelled wait (shutdown during start-up) would leave the opened store
        # with nobody to close it.
        with trio.CancelScope(shield=True):
            self._store = await trio.to_thread.run_sync(self._open_store)
        task_status.started()
        try:
            # The upkeep task lives in this nursery: the store is closed after it has ended.
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.marks.run, lambda: self._store)
                async for request in self._receive:
                    batch = [request]
                    while True:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._assign(batch)
                    self._start_upkeep()
                self.marks.stop()
        finally:
            self._nursery = None
            store, self._store = self._store, None
            if store is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.close)
                await self.marks.final(store)

    def _open_store(self) -> UserStore:
        return self._datadir.open_users(tail_size=self._tail_size)

    def _start_upkeep(self) -> None:
        store = self._store
        if (self._nursery is not None and store is not None and not self._upkeep_running
                and store.maintenance_due()):
            self._upkeep_running = True
            self._upkeep_done = trio.Event()
            self._nursery.start_soon(self._upkeep, store)

    async def _upkeep(self, store: UserStore) -> None:
        try:
            # One merge at a time: a worker thread is not abandoned, so a closing dictionary
            # waits for the step under way only (a merge of the whole index at worst).
            while not self._closing and store.maintenance_due():
                await trio.to_thread.run_sync(functools.partial(store.maintain, step=True))
                self._upkeeps += 1
        except Exception as exc:
            # The index is a cache of users.sqlite: a failed upkeep leaves the tail in
            # memory, and the next commit tries again.
            report_failure(exc, log, "user dictionary index upkeep", logging.WARNING)
        finally:
            self._upkeep_running = False
            self._upkeep_done.set()

    async def _assign(self, batch: list[_Request]) -> None:
        # One request (the usual case) asks for distinct names already.
        names = batch[0][0] if len(batch) == 1 else list(dict.fromkeys(
            itertools.chain.from_iterable(request[0] for request in batch)))
        try:
            if self._store is None:
                self._store = await trio.to_thread.run_sync(self._open_store)
            ids = await trio.to_thread.run_sync(self._store.assign, names)
        except Exception as exc:
            self._failed += 1
            self.marks.freeze()
            error = report_failure(exc, log, "user dictionary commit (reopening it)")
            await self._drop_store()
            for _, pending in batch:
                pending.fail(error)
            return
        self._commits += 1
        self._remember(ids)
        for _, pending in batch:
            pending.set(ids)  # read-only for the requesters: each takes its names from it

    async def _drop_store(self) -> None:
        # After a failed commit the connection's view of the file is not trusted (the lesson of
        # PostgreSQL's fsync failures): close it and re-read the file on the next request.
        # Not while an upkeep writes the index beside it: opening cleans the index folder.
        with trio.CancelScope(shield=True):
            await self._upkeep_done.wait()
        store, self._store = self._store, None
        if store is not None:
            try:
                await trio.to_thread.run_sync(store.close)
            except Exception as exc:
                report_failure(exc, log, "closing the user dictionary", logging.WARNING)

    def _remember(self, ids: dict[str, int]) -> None:
        # Oldest-first eviction (insertion order) rather than strict LRU: a hit costs one
        # dict lookup, with no reordering, and a miss costs a lookup in the store's index.
        cache = self._cache
        cache.update(ids)
        excess = len(cache) - self._cache_size
        if excess > 0:
            # A C loop: drain the evicting map into an empty deque.
            collections.deque(map(cache.pop, list(itertools.islice(cache, excess))), maxlen=0)

    def close(self) -> None:
        """Stop accepting requests; ``run`` returns once the queued ones are answered."""
        self._closing = True
        self._send.close()

"""The user-dictionary actor: the one task that assigns user ids.

Shards ask it for the ids of a batch's users. Known users are answered from a bounded
in-memory cache without a message; unknown ones go through the inbox, and the actor
assigns and commits the ids of everything queued in one durable transaction (group commit)
before replying. See ``shardstats.storage.users`` for why ids are committed first.

The cache is two generations of at most ``cache_size / 2`` names each: names go into the
young one; when it is full it becomes the old one and the previous old one is dropped whole
(no per-name eviction); a name found in the old generation is copied back into the young
one, so names in use stay cached. Every step over a batch's names is a C loop (``map``,
``dict``), none a Python loop per event.

The store's name index needs upkeep (its in-memory tail written out as a run, runs merged):
the actor runs it in a task of its own, in a worker thread beside the commits, so no batch
waits for it. The store is closed or replaced only when no upkeep is running.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
from dataclasses import dataclass

import trio

from shardstats.shards.failures import report_failure
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
        self._young: dict[str, int] = {}  # the cache's two generations (module docstring)
        self._old: dict[str, int] = {}
        self._generation = (cache_size + 1) // 2  # names per generation (0: no cache)
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

    def statistics(self) -> DictionaryStatistics:
        return DictionaryStatistics(len(self._young) + len(self._old), self._commits,
                                    self._failed, self._upkeeps)

    async def uids_for(self, names: list[str]) -> list[int]:
        """The id of each name (``result[i]`` is the id of ``names[i]``), assigning and
        durably committing ids for names never seen before."""
        uids = list(map(self._young.get, names))  # a C loop: a batch is mostly known users
        if None not in uids:
            return uids  # type: ignore[return-value]  # no None, as just checked
        # Ids are >= 1, so ``not uid`` marks exactly the events whose name the young
        # generation lacks: usually a few, so only they get a Python loop.
        misses = list(itertools.compress(range(len(names)), map(operator.not_, uids)))
        missing = list(dict.fromkeys(map(names.__getitem__, misses)))
        known = dict(zip(missing, map(self._old.get, missing), strict=True))
        if None in known.values():
            unknown = [name for name, uid in known.items() if uid is None]
            pending: Pending[dict[str, int]] = Pending()
            await self._send.send((unknown, pending))
            assigned = await pending.wait()
            known.update(zip(unknown, map(assigned.__getitem__, unknown), strict=True))
            promoted = {name: uid for name, uid in known.items() if name not in assigned}
        else:
            promoted = known
        if promoted:  # names of the old generation in use again: keep them cached
            self._remember(promoted)
        if len(misses) * 8 < len(names):  # a few: a Python loop over them only
            for at in misses:
                uids[at] = known[names[at]]
            return uids  # type: ignore[return-value]  # every None was replaced just above
        # Many (new users): the hits join the batch's own small dict, and every name is
        # looked up there, all in C loops. ``filter(None, uids)``: the ids of the hits, in
        # the order ``compress`` gives their names.
        known.update(zip(itertools.compress(names, uids), filter(None, uids)))
        return list(map(known.__getitem__, names))

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
                async for request in self._receive:
                    batch = [request]
                    while True:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._assign(batch)
                    self._start_upkeep()
        finally:
            self._nursery = None
            store, self._store = self._store, None
            if store is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.close)

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
        names = list(dict.fromkeys(name for request in batch for name in request[0]))
        try:
            if self._store is None:
                self._store = await trio.to_thread.run_sync(self._open_store)
            ids = await trio.to_thread.run_sync(self._store.assign, names)
        except Exception as exc:
            self._failed += 1
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
        # Two generations (module docstring): a hit costs one dict lookup with no reordering,
        # and eviction drops the old generation whole rather than name by name. Neither
        # holds more than a generation's names, so the cache never more than ``cache_size``.
        generation = self._generation
        if not generation:
            return
        if len(self._young) + len(ids) > generation:
            self._old = self._young
            if len(ids) > generation:  # one commit of more names than a generation holds
                ids = dict(itertools.islice(ids.items(), len(ids) - generation, None))
            self._young = dict(ids)
        else:
            self._young.update(ids)

    def close(self) -> None:
        """Stop accepting requests; ``run`` returns once the queued ones are answered."""
        self._closing = True
        self._send.close()

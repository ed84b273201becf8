"""Keeps the user dictionary's mark (``users.issued``, see ``shardstats.storage.issued``) up
with the ids it has committed: a task of the dictionary actor writes it at start and then at
most once per ``interval`` when there are new ids, in a worker thread, so no request waits for
it; the actor writes it once more after closing the store at a clean stop.

The mark only ever records ids the store reports committed (``UserStore.issued``). After a
failed commit the store's view of its file is not trusted (it is reopened, and may count rows
whose fsync failed): the keeper then writes no higher mark until the next start. A mark that
lags is harmless (it catches less); one ahead of the dictionary would be a false alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from shardstats.shards.failures import report_failure
from shardstats.storage.datadir import DataDir
from shardstats.storage.issued import Mark
from shardstats.storage.users import UserStore

log = logging.getLogger(__name__)

MARK_SECONDS = 1.0


class MarkKeeper:
    def __init__(self, datadir: DataDir, interval: float = MARK_SECONDS) -> None:
        self._datadir = datadir
        self._interval = interval
        self._written = 0  # ids in the mark this keeper last wrote
        self._frozen = False
        self._stopped = False
        self._scope: trio.CancelScope | None = None
        self.writes = 0

    async def run(self, store: Callable[[], UserStore | None]) -> None:
        """Write the mark now and then every ``interval`` while the store holds more ids than
        it says, until ``stop``."""
        with trio.CancelScope() as self._scope:
            if self._stopped:
                return
            while True:
                await self._write(store())
                await trio.sleep(self._interval)

    def stop(self) -> None:
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    def freeze(self) -> None:
        """A commit failed: write no higher mark in this process (module docstring)."""
        self._frozen = True

    async def final(self, store: UserStore) -> None:
        """After the store is closed (its ids checkpointed): the last mark of this run."""
        with trio.CancelScope(shield=True):
            await self._write(store)

    async def _write(self, store: UserStore | None) -> None:
        if store is None or self._frozen:
            return
        mark = Mark(store.seed, store.issued)
        if mark.ids <= self._written:
            return
        try:
            await trio.to_thread.run_sync(self._datadir.write_users_mark, mark)
        except OSError as exc:  # a full disk, say: the old mark stays (it only lags)
            report_failure(exc, log, f"writing {self._datadir.users_mark_path}",
                           logging.WARNING)
            return
        self._written = mark.ids
        self.writes += 1

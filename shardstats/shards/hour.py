"""The hour shard: the one task that owns an hour's journal, counters and user bitmap.

Theory of operation:
- Requests arrive as ``Submission``s on a bounded inbox; a full inbox is the back-pressure
  signal (the router answers 503).
- Group commit: the shard takes everything queued (up to ``max_batch``), gets the users' ids
  from the dictionary actor (durable before use), appends the rows to the journal in one
  transaction with ``synchronous=FULL`` in a worker thread, and only then applies them to the
  in-memory aggregate and releases every waiting request.
- A failed commit fails the whole batch and leaves the aggregate untouched. The journal
  connection is then closed; the next batch reopens the file and first folds in any rows the
  file holds beyond the aggregate (a commit that reported failure may still have landed), so
  memory always equals what the file says, never what we hoped it said.
- The shard snapshots itself every ``snapshot_interval`` seconds when it has new rows.
  Closing does not snapshot: the aggregate outlives the journal in the registry, which writes
  the hour's snapshot later, off every request's path (``registry`` rule 8). Snapshots are
  encoded on the event loop (a consistent view) and written in a worker thread.
- Readers on the same event loop read ``aggregate`` directly: it only changes synchronously,
  after a commit, so a GET that starts after a 204 sees that event. It is never changed from
  a worker thread: a base handed over by the registry (frozen, other readers may hold it) and
  the catch-up after a failed commit are folded into a copy, which then replaces it.
- A running shard holds its hour's journal writer claim (``DataDir.journal_writer``) from
  before it opens the journal until after it has closed it: a second shard of the same hour
  fails loudly instead of writing beside it.
- Cancellation of ``run`` (server shutdown) never interrupts an open, a commit or the close
  of the journal half-way: those awaits are shielded; each is bounded by one disk operation.
- A bug that stops the shard (an exception no storage failure explains, say while applying
  a committed batch) still answers everyone: the batch in flight and whatever is queued get
  an ``InternalError``. The owner is told before the inbox closes (``on_stop``), so no
  submission meets a closed inbox; the shard's aggregate is then untrustworthy (it may lack
  committed rows), so it is neither snapshotted nor kept (``failed``).
- ``journal_id`` names the journal the aggregate was read from and written to; with it the
  registry can snapshot the aggregate once the shard is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import EventColumns
from shardstats.core.stream import StreamTag, Verdict, admit
from shardstats.errors import InternalError, ShardstatsError, StorageError, StreamGap
from shardstats.shards import loader
from shardstats.shards.dictionary import UserDictionary
from shardstats.shards.failures import report_failure
from shardstats.shards.observer import NULL_OBSERVER, Observer
from shardstats.shards.pending import Pending
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal

log = logging.getLogger(__name__)

Submission = tuple[EventColumns, Pending[None], StreamTag | None]


@dataclass(frozen=True)
class ShardStatistics:
    hour: int
    queued: int
    batches: int
    events: int
    failed_batches: int
    last_seq: int
    snapshot_seq: int


class HourShard:
    def __init__(
        self,
        hour: int,
        datadir: DataDir,
        dictionary: UserDictionary,
        *,
        inbox_size: int,
        max_batch: int,
        snapshot_interval: float,
        base: HourAggregate | None = None,
        observer: Observer = NULL_OBSERVER,
        on_stop: Callable[[HourShard], None] | None = None,
    ) -> None:
        self.hour = hour
        self._datadir = datadir
        self._dictionary = dictionary
        self._max_batch = max_batch
        self._snapshot_interval = snapshot_interval
        self._base = base
        self._observer = observer
        self._on_stop = on_stop
        self.inbox, self._receive = trio.open_memory_channel[Submission](inbox_size)
        self.aggregate = HourAggregate(hour)
        self._journal: Journal | None = None
        self._journal_id = b""
        self._stream_seq = 0  # cluster mode: the last log record this hour's journal holds
        self._snapshot_seq = -1
        self._snapshot_soon = False
        self._batches = self._events = self._failed = 0
        self._batch: list[Submission] = []  # the batch being committed, answered by _finish
        self.closed = trio.Event()
        self.started = False
        # Died of a bug: its aggregate may lack committed rows (or hold half a block), so
        # the registry drops it and the hour is read again from the journal.
        self.failed: ShardstatsError | None = None
        # A commit failed and the journal was not read again since: the file may hold rows
        # the aggregate lacks (``_journal_for_write`` folds them in).
        self.diverged = False
        self.last_used = trio.current_time()

    def statistics(self) -> ShardStatistics:
        return ShardStatistics(
            self.hour,
            self._receive.statistics().current_buffer_used,
            self._batches,
            self._events,
            self._failed,
            self.aggregate.last_seq,
            self._snapshot_seq,
        )

    def submit_nowait(self, events: EventColumns) -> Pending[None]:
        """Queue events; raises ``trio.WouldBlock`` when the inbox is full."""
        pending: Pending[None] = Pending()
        self.inbox.send_nowait((events, pending, None))
        self.last_used = trio.current_time()
        return pending

    async def submit_stream(self, events: EventColumns, tag: StreamTag) -> Pending[None]:
        """Queue a log record's events for this hour (cluster mode), waiting for room in the
        inbox; raises ``trio.ClosedResourceError`` if the shard is closing."""
        pending: Pending[None] = Pending()
        await self.inbox.send((events, pending, tag))
        self.last_used = trio.current_time()
        return pending

    @property
    def journal_id(self) -> bytes:
        return self._journal_id

    def close(self) -> None:
        """Stop accepting; ``run`` answers what is queued, closes the journal and returns."""
        self.inbox.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._datadir.journal_writer(self.hour):
            try:
                await self._open()
                self.started = True
                task_status.started()
                await self._serve()
            except Exception as exc:
                if self.started:
                    self.failed = InternalError(f"hour {self.hour}: shard stopped: {exc!r}")
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await self._finish()

    async def _open(self) -> None:
        base = self._base

        def open_and_load() -> tuple[Journal, loader.LoadResult, int]:
            journal = self._datadir.open_journal(self.hour, create=True)
            try:
                start = None if base is None else base.copy()
                result = loader.load(self._datadir, self.hour, journal, start)
                return journal, result, journal.stream_seq()
            except BaseException:
                journal.close()
                raise

        # Shielded: a cancelled wait would leave the opened journal with nobody to close it.
        with trio.CancelScope(shield=True):
            journal, result, self._stream_seq = await trio.to_thread.run_sync(open_and_load)
        self._journal, self._journal_id = journal, journal.journal_id
        self.aggregate = result.aggregate
        if result.snapshot_used and not result.replayed:
            self._snapshot_seq = result.aggregate.last_seq
        if result.replayed:
            log.info("hour %d: replayed %d journal events", self.hour, result.replayed)
        self._snapshot_soon = result.replayed > 0

    async def _serve(self) -> None:
        # A long replay on open is worth a fresh snapshot right away.
        delay = 0.0 if self._snapshot_soon else self._snapshot_interval
        next_snapshot = trio.current_time() + delay
        while True:
            with trio.move_on_at(next_snapshot):
                try:
                    first = await self._receive.receive()
                except trio.EndOfChannel:
                    return
                batch = [first]
                item = first
                size = len(first[0])
                while size < self._max_batch:
                    try:
                        item = self._receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(item)
                    size += len(item[0])
                self._batch = batch
                with trio.CancelScope(shield=True):
                    await self._commit(batch)
                # Do not keep the last batch (up to max_batch events) alive while idle: every
                # open hour would hold one, and the garbage collector would keep walking them.
                self._batch = []
                del batch, first, item
            if trio.current_time() >= next_snapshot:
                await self.snapshot()
                next_snapshot = trio.current_time() + self._snapshot_interval

    async def _commit(self, batch: list[Submission]) -> None:
        stream_seq = None
        if any(tag is not None for _, _, tag in batch):
            # Judge log records against the journal as it is: after a commit reported as
            # failed, reopening it reads the stream seq of rows that landed all the same.
            try:
                await self._journal_for_write()
            except Exception as exc:
                await self._fail(batch, exc, time.perf_counter())
                return
            batch, stream_seq = self._admit_stream(batch)
            if not batch:
                return
        events = EventColumns.concat([columns for columns, _, _ in batch])
        started = time.perf_counter()
        try:
            uids = await self._dictionary.uids_for(events.users)
            journal = await self._journal_for_write()
            extra = () if stream_seq is None else (stream_seq,)  # cluster mode only
            last, kept = await trio.to_thread.run_sync(journal.append, events, uids, *extra)
        except Exception as exc:
            await self._fail(batch, exc, started)
            return
        if stream_seq is not None:
            self._stream_seq = stream_seq
        kinds = events.kinds
        if kept is not None:  # repeated event ids: acknowledged, not counted again
            uids, kinds = [uids[i] for i in kept], [kinds[i] for i in kept]
        self.aggregate.apply_block(last - len(uids) + 1, uids, kinds)
        self._batches += 1
        self._events += len(events)
        self._observer.commit(len(events), time.perf_counter() - started, True)
        for _, pending, _ in batch:
            pending.set(None)

    async def _fail(self, batch: list[Submission], exc: Exception, started: float) -> None:
        count = sum(len(columns) for columns, _, _ in batch)
        self._failed += 1
        self._observer.commit(count, time.perf_counter() - started, False)
        error = report_failure(exc, log, f"hour {self.hour}: commit of {count} events")
        self.diverged = True
        await self._drop_journal()
        for _, pending, _ in batch:
            pending.fail(error)

    def _admit_stream(self, batch: list[Submission]) -> tuple[list[Submission], int | None]:
        """Answer log records already applied or out of turn (``core.stream`` rule 4) and
        return what to commit, with the stream seq the journal then holds."""
        tagged = [tag for _, _, tag in batch if tag is not None]
        verdicts, applied = admit(self._stream_seq, tagged)
        outcome = iter(verdicts)
        keep = []
        for item in batch:
            verdict = Verdict.APPLY if item[2] is None else next(outcome)
            if verdict is Verdict.APPLY:
                keep.append(item)
            elif verdict is Verdict.SKIP:
                item[1].set(None)
            else:
                item[1].fail(StreamGap(f"hour {self.hour}: record {item[2]} follows a gap"))
        return keep, (applied if applied != self._stream_seq else None)

    async def _journal_for_write(self) -> Journal:
        if self._journal is not None:
            return self._journal

        current = self.aggregate

        def reopen() -> tuple[Journal, HourAggregate, int, int]:
            journal = self._datadir.open_journal(self.hour, create=True)
            try:
                if journal.journal_id != self._journal_id:
                    raise StorageError(f"journal of hour {self.hour} was replaced on disk")
                fresh = current.copy()
                return journal, fresh, loader.replay(fresh, journal), journal.stream_seq()
            except BaseException:
                journal.close()
                raise

        journal, fresh, caught_up, self._stream_seq = await trio.to_thread.run_sync(reopen)
        if caught_up:
            self.aggregate = fresh
            log.warning(
                "hour %d: %d rows of a commit reported as failed are on disk; counted",
                self.hour,
                caught_up,
            )
        self._journal = journal
        self.diverged = False
        log.info("hour %d: journal reopened", self.hour)
        return journal

    async def _drop_journal(self) -> None:
        journal, self._journal = self._journal, None
        if journal is not None:
            try:
                await trio.to_thread.run_sync(journal.close)
            except Exception as exc:
                report_failure(exc, log, f"hour {self.hour}: closing the journal", logging.WARNING)

    async def snapshot(self) -> None:
        aggregate = self.aggregate
        if aggregate.last_seq == self._snapshot_seq or self._journal_id == b"":
            return
        started = time.perf_counter()
        seq = aggregate.last_seq
        try:
            data = codec.encode(aggregate, self._journal_id)
            await trio.to_thread.run_sync(self._datadir.write_snapshot, self.hour, data)
        except Exception as exc:
            self._observer.snapshot(time.perf_counter() - started, False)
            # The journal still has it all: the next snapshot or load covers it.
            report_failure(exc, log, f"hour {self.hour}: snapshot", logging.WARNING)
            return
        self._observer.snapshot(time.perf_counter() - started, True)
        self._snapshot_seq = seq

    async def _finish(self) -> None:
        # The owner stops routing to this shard before its inbox closes (a shard that dies
        # closes it on its own), so no submission meets a closed inbox.
        if self._on_stop is not None:
            self._on_stop(self)
        self.inbox.close()
        # After an unexpected stop the batch in flight and anything still queued must not
        # wait forever (nor for the disk work below).
        error = self.failed or StorageError(f"hour {self.hour} shard stopped")
        for _, pending, _ in self._batch:
            if not pending.done:
                pending.fail(error)
        self._batch = []
        while True:
            try:
                _, pending, _ = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            pending.fail(error)
        try:
            await self._drop_journal()
        finally:
            self.closed.set()

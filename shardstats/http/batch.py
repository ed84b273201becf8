"""``POST /analytics/batch`` as a plain async function: body bytes in, reply out.

The CPU work of a batch (counting its lines, judging them, building the answer) is pure code
in ``core.batch`` and ``core.batch_answer`` cut into bounded steps; ``in_steps`` runs them on
the event loop with a checkpoint after each, so a 16 MiB body never holds the loop for more
than one step (about a quarter of a millisecond) and a GET arriving meanwhile waits about
that long per turn. Steps on the loop rather than a worker thread: msgspec, the per-line
rules and the answer all hold the GIL, so a thread would still stall the loop, only less
predictably (tools/bench.py, maxbatch: with 1 ms steps the GET p50 during hostile batches
was 10-20 ms, with quarter-millisecond steps 6-9 ms).

The valid events go to the shards in pieces of at most ``max(max_commit_events, PIECE_EVENTS)``
events, all submitted at once: a shard's group commit (user ids, the journal block, the
bitmap) works on the loop in proportion to its events, about 0.4 µs each here, so a
100k-event batch as one submission was one commit holding the loop for tens of milliseconds.
A piece of 10,000 costs a few; batches of up to 10,000 events (what the load generator and
the benchmark send) stay one submission and one commit, as before.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import TypeVar

import trio

from shardstats.core.batch import Body, Steps, count_lines, judge_steps
from shardstats.core.batch_answer import FailedAt, answer_steps
from shardstats.core.events import HOUR_MS, EventColumns
from shardstats.errors import (
    BatchTooLarge,
    Field,
    LogOutcomeUnknown,
    Reason,
    ShardstatsError,
    StorageError,
)
from shardstats.http.hot import Reply, json_error
from shardstats.http.metrics import Metrics
from shardstats.shards.service import Service

T = TypeVar("T")
PIECE_EVENTS = 10_000  # events per submission to the shards, unless max_commit_events is larger
_JSON = ("content-type", "application/json")


async def in_steps(steps: Steps[T]) -> T:
    """Run pure work a step at a time, letting every other task run between two steps."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        await trio.lowlevel.checkpoint()


class BatchRoute:
    def __init__(self, service: Service, metrics: Metrics) -> None:
        self._service = service
        self._metrics = metrics

    async def post(self, body: Body) -> Reply:
        """The reply to a batch body, whole or as the chunks it arrived in (authorization and
        ``max_batch_bytes`` are the caller's). ``BatchTooLarge`` when the body has more than
        ``max_batch_lines`` lines: checked before any line is judged, the caller answers it
        like a body over ``max_batch_bytes``."""
        service = self._service
        limit = service.settings.max_batch_lines
        lines = await in_steps(count_lines(body))
        if lines > limit:
            raise BatchTooLarge(f"the body has {lines:,} lines; a batch may have at most "
                                f"{limit:,} lines (max_batch_lines)", Field.BODY,
                                Reason.TOO_LARGE)
        parsed = await in_steps(judge_steps(body, service.clock.now_ms(), service.limits))
        size = len(body) if isinstance(body, bytes) else sum(map(len, body))
        del body  # the caller passes its only reference: let it go before the commit
        piece = max(service.settings.max_commit_events, PIECE_EVENTS)
        chunks = await in_steps(parsed.chunks(piece))
        outcomes = await self._submit(chunks)
        refused = [outcome for outcome in outcomes if isinstance(outcome, ShardstatsError)]
        if len(refused) == len(outcomes):  # nothing was taken (not ready): as before, no 200
            return json_error(refused[0])
        failed_at = _failures(outcomes, [len(chunk) for chunk in chunks])
        answer = await in_steps(answer_steps(parsed, failed_at, size))
        self._metrics.accepted.inc(answer.accepted)
        for problem, count in answer.rejected_by_problem.items():
            self._metrics.reject(problem, count)
        return 200, [_JSON], answer.body

    async def _submit(self, chunks: list[EventColumns]) -> list[Outcome]:
        """Submit every chunk at once; what became of each: per hour, None when durable or
        the error of that hour; or the error that refused the whole chunk (not ready)."""
        outcomes: list[Outcome] = [{}] * len(chunks)

        async def one(index: int, chunk: EventColumns) -> None:
            try:
                outcomes[index] = await self._service.submit_batch(chunk)
            except ShardstatsError as exc:
                outcomes[index] = exc

        if len(chunks) == 1:
            await one(0, chunks[0])
        else:
            async with trio.open_nursery() as nursery:
                for index, chunk in enumerate(chunks):
                    nursery.start_soon(one, index, chunk)
        return outcomes


Outcome = dict[int, ShardstatsError | None] | ShardstatsError


def _failures(outcomes: list[Outcome], sizes: list[int]) -> FailedAt | None:
    """Why the event at an index (of a given timestamp) was not made durable; None when
    every event was. ``sizes``: the events in each chunk."""
    if all(isinstance(outcome, dict) and not any(outcome.values()) for outcome in outcomes):
        return None
    ends = list(accumulate(sizes))

    def failed_at(index: int, timestamp: int) -> str | None:
        outcome = outcomes[bisect_right(ends, index)]
        error = outcome if isinstance(outcome, ShardstatsError) else outcome.get(
            timestamp // HOUR_MS)
        if error is None:
            return None
        if isinstance(error, StorageError):
            return "storage error"
        if isinstance(error, LogOutcomeUnknown):  # cluster mode: sent, no ack in time
            return "outcome unknown (may be counted; retry with event ids)"
        return "internal error" if error.status == 500 else str(error)

    return failed_at

"""The read barrier: read-your-writes across nodes.

A GET that starts after some node answered 204 must count that event. The event's record is
in the log by then, so the GET asks the log for its last seq (a call that *starts after the
GET started*) and waits until this node has applied that far.

Rules:
1. One log call serves every GET that started before the call did: concurrent GETs share it.
   A GET never reuses a call that began before the GET itself (it could miss a record
   acknowledged in between); it waits for the next one.
2. The log calls run in a task the barrier owns, so a GET that is cancelled (its client hung
   up) abandons only its own wait; the others still get the answer.
3. Past ``timeout`` seconds of waiting for the node to apply, the GET fails with
   ``Behind`` (503 + Retry-After: this node is lagging; another node may answer).
4. When the log cannot be asked (NATS down, no quorum), the GET is answered from what this
   node holds, and the answer says so (``Consistency.STALE``): reads keep working through a
   log outage, without the cross-node guarantee.
"""

from __future__ import annotations

import enum

import trio

from shardstats.cluster.log import EventLog
from shardstats.cluster.materializer import Materializer
from shardstats.errors import ShardstatsError, Unavailable
from shardstats.shards.pending import Pending


class Behind(Unavailable):
    """This node has not applied the log as far as the read barrier requires, in time."""

    retry_after = 1


class Consistency(enum.Enum):
    FRESH = "fresh"  # counts every event acknowledged anywhere before the request
    STALE = "stale"  # the log could not be asked: what this node holds


class ReadBarrier:
    def __init__(self, log_: EventLog, materializer: Materializer, timeout: float) -> None:
        self._log = log_
        self._materializer = materializer
        self._timeout = timeout
        self._running = False  # a log call is in flight
        self._next: Pending[int] | None = None  # the call to start when it is done
        self._nursery: trio.Nursery | None = None
        self.calls = 0
        self.stale = 0
        self.behind = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def wait(self) -> Consistency:
        try:
            with trio.fail_after(self._timeout):
                target = await self._last_seq()
        except (ShardstatsError, trio.TooSlowError):
            self.stale += 1
            return Consistency.STALE
        self._materializer.observe_last_seq(target)
        if self._materializer.applied >= target:
            return Consistency.FRESH
        with trio.move_on_after(self._timeout):
            await self._materializer.wait_applied(target)
        if self._materializer.applied >= target:  # reached, perhaps just as time ran out
            return Consistency.FRESH
        self.behind += 1
        raise Behind(f"this node has applied the log to seq {self._materializer.applied}, "
                     f"not yet {target}")

    async def _last_seq(self) -> int:
        """The log's last seq from a call that starts after this one was made (rule 1):
        the call now in flight may have started earlier, so join the one after it."""
        outcome = self._next
        if outcome is None:
            outcome = self._next = Pending()
            if not self._running:
                self._start_next()
        return await outcome.wait()

    def _start_next(self) -> None:
        assert self._nursery is not None, "read barrier is not running"
        outcome, self._next = self._next, None
        if outcome is not None:
            self._running = True
            self.calls += 1
            self._nursery.start_soon(self._ask, outcome)

    async def _ask(self, outcome: Pending[int]) -> None:
        try:
            outcome.set(await self._log.last_seq())
        except ShardstatsError as exc:
            outcome.fail(exc)
        finally:
            self._running = False
            self._start_next()

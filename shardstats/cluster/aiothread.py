"""Run asyncio coroutines (nats-py) from trio: one asyncio event loop in one dedicated thread.

Theory of operation:

- ``AsyncioThread`` owns one asyncio loop running ``run_forever`` in a daemon thread. Every
  asyncio object (the NATS connection, subscriptions) is created and used only on that loop.
- ``await bridge.run(fn, *args)`` schedules ``fn(*args)`` as an asyncio task on the loop
  (``call_soon_threadsafe``), then parks the calling trio task with
  ``trio.lowlevel.wait_task_rescheduled``. The asyncio task's done-callback hands its outcome
  back through the trio token's ``run_sync_soon``: no trio worker thread is held per call, and
  thousands of calls can be in flight.
- Cancelling the trio caller cancels the asyncio task; the caller resumes (with
  ``trio.Cancelled``) only once the asyncio side has actually finished, so no asyncio work
  outlives the trio call that started it. If the task completed before the cancellation
  reached it, its result is returned and trio delivers the cancellation at the next checkpoint.
- ``aclose()`` runs an optional asyncio clean-up coroutine, cancels what is left, stops the
  loop and joins the thread (bounded). Calls after close raise ``BridgeClosed``.

Why a thread rather than trio-asyncio: nats-py's reader, pinger and reconnect tasks then live
on a plain asyncio loop exactly as nats-py is tested, independent of trio's scheduling and of
any trio nursery; the boundary is this one narrow function. Measured on this machine
(``tools/bench_natslog.py``) the hop costs tens of microseconds, well under a PubAck's round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

JOIN_TIMEOUT = 5.0


class BridgeClosed(RuntimeError):
    """The asyncio thread is stopped; nothing was run."""


class AsyncioThread:
    def __init__(self, name: str = "asyncio-bridge") -> None:
        # Not asyncio.new_event_loop(): an installed policy (trio-asyncio's) may refuse it here.
        self._loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the asyncio loop and return its result to this trio task."""
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller starts nothing
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise BridgeClosed("the asyncio thread is stopped")
        token = trio.lowlevel.current_trio_token()
        trio_task = trio.lowlevel.current_task()
        box: list[asyncio.Task[T]] = []
        cancel_requested: list[trio.lowlevel.RaiseCancelT] = []

        def finish(task: asyncio.Task[T]) -> None:  # in the trio thread
            result: outcome.Outcome[T]
            if task.cancelled():
                if cancel_requested:
                    result = outcome.capture(cancel_requested[0])
                else:
                    result = outcome.Error(BridgeClosed("the asyncio loop was stopped"))
            else:
                exc = task.exception()
                result = outcome.Error(exc) if exc is not None else outcome.Value(task.result())
            trio.lowlevel.reschedule(trio_task, result)

        def start() -> None:  # in the asyncio thread
            task = self._loop.create_task(fn(*args))
            box.append(task)
            task.add_done_callback(lambda t: token.run_sync_soon(finish, t))

        def cancel() -> None:  # in the asyncio thread, always after start()
            box[0].cancel()

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:  # loop closed between the check and here
            await trio.lowlevel.checkpoint()
            raise BridgeClosed("the asyncio thread is stopped") from None

        def abort(raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            cancel_requested.append(raise_cancel)
            with contextlib.suppress(RuntimeError):  # loop gone: finish() already queued
                self._loop.call_soon_threadsafe(cancel)
            return trio.lowlevel.Abort.FAILED

        value: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return value

    async def aclose(
        self, cleanup: Callable[[], Awaitable[object]] | None = None, within: float = 5.0
    ) -> None:
        """Run ``cleanup()`` on the loop (bounded), stop the loop and join the thread."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            if cleanup is not None:
                async def bounded() -> None:
                    await asyncio.wait_for(cleanup(), within)

                with trio.move_on_after(within + 1.0) as scope:
                    scope.shield = True
                    with contextlib.suppress(TimeoutError, BridgeClosed):
                        await self.run(bounded)
        finally:
            self._closed = True
            if not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # already stopped
                    self._loop.call_soon_threadsafe(self._loop.stop)
            with trio.move_on_after(JOIN_TIMEOUT) as scope:
                scope.shield = True
                await trio.to_thread.run_sync(self._thread.join, JOIN_TIMEOUT)

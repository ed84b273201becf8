"""The asyncio-thread bridge: results, errors and cancellation cross it exactly once."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from shardstats.cluster.aiothread import AsyncioThread, BridgeClosed

pytestmark = pytest.mark.cluster


async def test_result_error_and_thread() -> None:
    bridge = AsyncioThread()
    try:
        async def where(x: int) -> tuple[int, str]:
            await asyncio.sleep(0)
            return x * 2, threading.current_thread().name

        value, thread = await bridge.run(where, 21)
        assert value == 42
        assert thread == "asyncio-bridge"

        async def boom() -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            await bridge.run(boom)
    finally:
        await bridge.aclose()


async def test_many_calls_in_flight_hold_no_trio_threads() -> None:
    bridge = AsyncioThread()
    try:
        async def slow(i: int) -> int:
            await asyncio.sleep(0.05)
            return i

        results: list[int] = []

        async def call(i: int) -> None:
            results.append(await bridge.run(slow, i))

        limiter = trio.to_thread.current_default_thread_limiter()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for i in range(500):  # far more than trio's 40 worker threads
                    nursery.start_soon(call, i)
                await trio.sleep(0.01)
                assert limiter.statistics().borrowed_tokens == 0
        assert sorted(results) == list(range(500))
    finally:
        await bridge.aclose()


async def test_cancelling_the_trio_caller_cancels_the_asyncio_task() -> None:
    bridge = AsyncioThread()
    try:
        started = threading.Event()
        outcome: list[str] = []

        async def forever() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                outcome.append("cancelled on the asyncio side")
                raise

        with trio.fail_after(5):
            with trio.move_on_after(0.1) as scope:
                await bridge.run(forever)
            assert scope.cancelled_caught
        assert started.is_set()
        # The trio caller came back only after the asyncio task had finished.
        assert outcome == ["cancelled on the asyncio side"]
    finally:
        await bridge.aclose()


async def test_close_is_idempotent_runs_cleanup_and_refuses_calls() -> None:
    bridge = AsyncioThread()
    cleaned: list[bool] = []

    async def cleanup() -> None:
        cleaned.append(True)

    await bridge.aclose(cleanup)
    await bridge.aclose(cleanup)
    assert cleaned == [True]
    assert bridge.closed

    async def nothing() -> None:
        pass

    with pytest.raises(BridgeClosed):
        await bridge.run(nothing)

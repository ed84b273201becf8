"""InMemoryLog's fault hooks do what a real log may do, and nothing else."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from shardstats.cluster.log import LogRecord
from shardstats.cluster.memory import InMemoryLog
from shardstats.errors import LogOutcomeUnknown, LogUnavailable

from .conftest import take

pytestmark = pytest.mark.cluster


async def test_fail_publish_kinds() -> None:
    log = InMemoryLog()
    log.fail_publish("unavailable", "unknown_lost", "unknown_stored")
    with pytest.raises(LogUnavailable):
        await log.publish(b"a", "a")
    with pytest.raises(LogOutcomeUnknown):
        await log.publish(b"b", "b")
    with pytest.raises(LogOutcomeUnknown):
        await log.publish(b"c", "c")
    assert [r.msg_id for r in log.stored()] == ["c"]  # only unknown_stored stored it
    # The retry of the unknown-but-stored one finds the original (the point of msg_id).
    assert await log.publish(b"c", "c") == 1
    stats = log.statistics()
    assert (stats.publish_unavailable, stats.publish_unknown, stats.duplicates) == (1, 2, 1)


async def test_redeliver_repeats_the_last_records_to_open_consumers() -> None:
    log = InMemoryLog()
    for i in range(4):
        await log.publish(bytes([i]), f"m{i}")
    got: list[int] = []
    with trio.fail_after(2):
        async with log.records(0) as records:
            async for record in records:
                got.append(record.seq)
                if len(got) == 3:
                    log.redeliver(2)
                if len(got) == 6:
                    break
    assert got == [1, 2, 3, 2, 3, 4]


async def test_break_consumers_ends_iteration_with_unavailable() -> None:
    log = InMemoryLog()
    await log.publish(b"a", "a")
    got = []
    with trio.fail_after(2), pytest.raises(LogUnavailable, match="consumer lost"):
        async with log.records(0) as records:
            async for record in records:
                got.append(record.seq)
                log.break_consumers()
    assert got == [1]
    assert log.statistics().consumer_restarts == 1
    assert [r.seq for r in await take(log, 0, 1, within=2)] == [1]  # reopening works


async def test_dedupe_off_stores_a_late_retry_twice() -> None:
    log = InMemoryLog()
    await log.publish(b"a", "a")
    log.dedupe = False
    assert await log.publish(b"a", "a") == 2
    assert [r.msg_id for r in await take(log, 0, 2, within=2)] == ["a", "a"]


async def test_duplicate_window_follows_the_clock() -> None:
    now = [0]
    log = InMemoryLog(duplicate_window_seconds=10, clock_ns=lambda: now[0])
    assert await log.publish(b"a", "a") == 1
    now[0] = 9_999_999_999
    assert await log.publish(b"a", "a") == 1
    now[0] = 10_000_000_000
    assert await log.publish(b"a", "a") == 2


async def test_drop_before_is_retention_and_leaves_a_gap() -> None:
    log = InMemoryLog()
    for i in range(5):
        await log.publish(bytes([i]), f"m{i}")
    log.drop_before(4)
    assert [r.seq for r in await take(log, 0, 2, within=2)] == [4, 5]
    assert await log.last_seq() == 5


async def test_unavailable_log_keeps_consumers_waiting_then_resumes() -> None:
    log = InMemoryLog()
    await log.publish(b"a", "a")
    log.set_available(False)
    got: list[int] = []
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            async def consume() -> None:
                async with log.records(0) as records:
                    async for record in records:
                        got.append(record.seq)
                        if len(got) == 2:
                            return

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()  # the consumer waits for record 2
            assert got == [1]
            log.set_available(True)
            await log.publish(b"b", "b")
    assert got == [1, 2]


def test_record_seq_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        LogRecord(seq=0, data=b"", msg_id="", timestamp_ns=0)


async def test_msg_ids_older_than_the_window_are_forgotten() -> None:
    now = [0]
    log = InMemoryLog(duplicate_window_seconds=1, clock_ns=lambda: now[0])
    for i in range(100):
        now[0] = i * 100_000_000  # ten publishes per window
        await log.publish(b"x", f"m{i}")
    assert len(log._by_msg_id) <= 11
    assert await log.publish(b"x", "m99") == 100  # still inside the window

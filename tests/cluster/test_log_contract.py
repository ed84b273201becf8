"""The EventLog rules (shardstats/cluster/log.py), checked on every implementation.

``log_harness`` gives an ``InMemoryLog`` and a ``JetStreamLog`` on a real nats-server; each
test here runs against both, so the fake the unit tests use behaves like the real log.
"""

from __future__ import annotations

import dataclasses

import pytest
import trio

from shardstats.cluster.log import EventLog, LogRecord, LogStatistics
from shardstats.errors import LogUnavailable, Unavailable

from .conftest import LogHarness, take

pytestmark = pytest.mark.cluster

STEP = 10.0  # bound on any one step that should take milliseconds
RECOVERY = 30.0  # bound on a restart: server up, client reconnected, consumer resumed


async def publish_when_back(log: EventLog, data: bytes, msg_id: str) -> int:
    """Retry a publish on LogUnavailable until the log takes it (bounded by RECOVERY)."""
    with trio.fail_after(RECOVERY):
        while True:
            try:
                return await log.publish(data, msg_id)
            except LogUnavailable:
                await trio.sleep(0.1)


async def test_empty_log_has_last_seq_zero(log_harness: LogHarness) -> None:
    assert await log_harness.log.last_seq() == 0


async def test_publish_returns_increasing_seqs_and_last_seq_follows(
    log_harness: LogHarness,
) -> None:
    log = log_harness.log
    seqs = [await log.publish(f"block {i}".encode(), f"id-{i}") for i in range(5)]
    assert seqs == sorted(set(seqs))
    assert seqs[0] >= 1
    assert await log.last_seq() == seqs[-1]
    stats = log.statistics()
    assert stats.published == 5
    assert stats.last_published_seq == seqs[-1]
    assert stats.connected


async def test_duplicate_msg_id_is_stored_once(log_harness: LogHarness) -> None:
    log = log_harness.log
    first = await log.publish(b"a", "same")
    other = await log.publish(b"b", "other")
    again = await log.publish(b"a", "same")
    assert again == first
    assert await log.last_seq() == other
    assert log.statistics().duplicates == 1
    records = await take(log, 0, 2)
    assert [(r.seq, r.data, r.msg_id) for r in records] == [(first, b"a", "same"),
                                                             (other, b"b", "other")]


async def test_records_after_gives_exactly_the_later_records_in_order(
    log_harness: LogHarness,
) -> None:
    log = log_harness.log
    seqs = [await log.publish(bytes([i]) * 100, f"r{i}") for i in range(10)]
    tail = await take(log, seqs[3], 6)
    assert [r.seq for r in tail] == seqs[4:]
    assert [r.data for r in tail] == [bytes([i]) * 100 for i in range(4, 10)]
    assert [r.msg_id for r in tail] == [f"r{i}" for i in range(4, 10)]
    assert all(r.timestamp_ns > 0 for r in tail)
    everything = await take(log, 0, 10)
    assert [r.seq for r in everything] == seqs


async def test_records_waits_for_new_records(log_harness: LogHarness) -> None:
    log = log_harness.log
    before = await log.publish(b"old", "old")
    got: list[LogRecord] = []

    async def consume(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with log.records(before) as records:
            task_status.started()
            async for record in records:
                got.append(record)
                if len(got) == 3:
                    return

    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            await nursery.start(consume)
            await trio.sleep(0.05)  # the consumer is waiting at the end of the log
            seqs = [await log.publish(f"new{i}".encode(), f"new{i}") for i in range(3)]
    assert [r.seq for r in got] == seqs
    assert [r.data for r in got] == [b"new0", b"new1", b"new2"]


async def test_publish_without_the_log_fails_fast_with_unavailable(
    log_harness: LogHarness,
) -> None:
    log = log_harness.log
    await log.publish(b"before", "before")
    await log_harness.begin_outage()
    # A publish in the instant before the client notices the lost connection is sent into a
    # dead socket: its outcome is unknown (500). Once the client knows, publishes fail fast.
    with trio.fail_after(STEP):
        while True:
            if not log.statistics().connected:
                break
            await trio.sleep(0.01)
    with trio.fail_after(1.0):  # fast: well under the 2 s publish timeout
        with pytest.raises(LogUnavailable) as caught:
            await log.publish(b"during", "during")
    assert isinstance(caught.value, Unavailable)
    assert caught.value.status == 503
    assert log.statistics().publish_unavailable >= 1
    with trio.fail_after(1.0), pytest.raises(LogUnavailable):
        await log.last_seq()


async def test_consumer_continues_in_order_after_an_outage(log_harness: LogHarness) -> None:
    log = log_harness.log
    first = [await log.publish(f"a{i}".encode(), f"a{i}") for i in range(3)]
    got: list[LogRecord] = []
    arrived = trio.Event()

    async def consume() -> None:
        async with log.records(0) as records:
            async for record in records:
                got.append(record)
                if len(got) == 3:
                    arrived.set()
                if len(got) == 6:
                    return

    with trio.fail_after(RECOVERY * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await arrived.wait()
            await log_harness.begin_outage()
            await trio.sleep(0.2)
            await log_harness.end_outage()
            second = [await publish_when_back(log, f"b{i}".encode(), f"b{i}") for i in range(3)]
    assert [r.seq for r in got] == first + second
    assert [r.data for r in got] == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]


async def test_close_is_idempotent_and_ends_everything(log_harness: LogHarness) -> None:
    log = log_harness.log
    await log.publish(b"x", "x")
    ended = trio.Event()

    async def consume() -> None:
        async with log.records(0) as records:
            async for _ in records:
                pass
        ended.set()

    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.sleep(0.1)
            await log.aclose()
            await log.aclose()
            await ended.wait()
    with pytest.raises(LogUnavailable) as caught:
        await log.publish(b"y", "y")
    assert caught.value.reason == "closed"
    with pytest.raises(LogUnavailable):
        await log.last_seq()


async def test_statistics_is_a_frozen_snapshot(log_harness: LogHarness) -> None:
    log = log_harness.log
    before = log.statistics()
    await log.publish(b"x", "x")
    assert isinstance(before, LogStatistics)
    assert before.published == 0
    assert log.statistics().published == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.published = 5  # type: ignore[misc]


async def test_cancelled_publish_raises_cancelled(log_harness: LogHarness) -> None:
    log = log_harness.log
    with trio.CancelScope() as scope:
        scope.cancel()
        await log.publish(b"x", "cancelled")
        pytest.fail("publish ignored the cancellation")  # pragma: no cover
    assert scope.cancelled_caught
    # The log is still usable, and a retry of the same id is harmless.
    seq = await log.publish(b"x", "cancelled")
    assert await log.publish(b"x", "cancelled") == seq


async def test_cancelling_a_wait_for_the_next_record_loses_nothing(
    log_harness: LogHarness,
) -> None:
    log = log_harness.log
    seqs = [await log.publish(f"r{i}".encode(), f"r{i}") for i in range(200)]
    got: list[int] = []
    cancelled = 0
    with trio.fail_after(RECOVERY):
        async with log.records(0) as records:
            iterator = aiter(records)
            step = 0
            while len(got) < len(seqs):
                step += 1
                # Deadlines from "already passed" to a few hundred microseconds.
                with trio.move_on_after((step % 7) * 0.00005) as scope:
                    record = await anext(iterator)
                    got.append(record.seq)
                cancelled += scope.cancelled_caught
    assert got == seqs
    assert cancelled > 0

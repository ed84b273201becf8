"""A shard that dies of a bug: every request it took is answered, nobody reaches its closed
inbox, and its hour is read again from disk; a failing final snapshot still closes the
journal."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import HOUR_MS, Event, EventKind
from shardstats.errors import InternalError, ShardstatsError
from shardstats.storage.journal import Journal
from tests.shards.conftest import running
from tests.shards.test_service import make_service
from tests.strategies import BASE_HOUR

HOUR = BASE_HOUR - 3


def ev(i: int) -> Event:
    return Event(HOUR * HOUR_MS + i, f"u{i}", EventKind.CLICK)


def break_apply_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next group commit lands in the journal, then a bug stops the shard."""
    real = HourAggregate.apply_block
    armed = [True]

    def buggy(self: HourAggregate, *args: Any) -> int:
        if armed[0]:
            armed[0] = False
            raise ValueError("a bug")
        return real(self, *args)

    monkeypatch.setattr(HourAggregate, "apply_block", buggy)


async def test_a_bug_after_the_commit_answers_the_batch_and_keeps_its_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(make_service(tmp_path)) as service:
        await service.submit(ev(0))
        break_apply_block_once(monkeypatch)
        with trio.fail_after(30), pytest.raises(InternalError):  # a hang guard, not a timing
            await service.submit(ev(1))
        # The event is in the journal: the hour, read again from disk, counts it (a 500 may
        # still have been counted; a 204 must be).
        assert (await service.query(HOUR)).clicks == 2
        await service.submit(ev(2))
        assert (await service.query(HOUR)).clicks == 3


async def test_requests_meeting_a_dying_shard_are_served_by_its_successor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the dead shard closes its journal (a slow disk here), new submissions for the
    hour wait for it and reach a new shard, never its closed inbox."""
    async with running(make_service(tmp_path)) as service:
        await service.submit(ev(0))
        closing, release = threading.Event(), threading.Event()
        real_close = Journal.close

        def slow_close(self: Journal, **kwargs: Any) -> None:
            if not release.is_set():
                closing.set()
                release.wait()
            real_close(self, **kwargs)

        monkeypatch.setattr(Journal, "close", slow_close)
        break_apply_block_once(monkeypatch)
        outcomes: list[str] = []

        async def submit(i: int) -> None:
            try:
                await service.submit(ev(i))
                outcomes.append("ok")
            except ShardstatsError as exc:
                outcomes.append(type(exc).__name__)
            except Exception as exc:  # the HTTP layer would answer a bare 500
                outcomes.append(f"raw {type(exc).__name__}")

        with trio.fail_after(30):  # a hang guard
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit, 1)
                await trio.to_thread.run_sync(closing.wait)
                for i in range(2, 12):
                    nursery.start_soon(submit, i)
                await trio.testing.wait_all_tasks_blocked()
                release.set()
        assert sorted(outcomes) == ["InternalError"] + ["ok"] * 10
        assert (await service.query(HOUR)).clicks == 12


async def test_a_failing_final_snapshot_still_closes_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Journal] = []
    real_close = Journal.close

    def spy(self: Journal, **kwargs: Any) -> None:
        closed.append(self)
        real_close(self, **kwargs)

    def broken_encode(*args: Any, **kwargs: Any) -> bytes:
        raise ValueError("a bug in encode")

    monkeypatch.setattr(Journal, "close", spy)
    fds_before = len(os.listdir("/proc/self/fd"))
    async with running(make_service(tmp_path, snapshot_interval_seconds=3600.0)) as service:
        await service.submit(ev(0))
        monkeypatch.setattr(codec, "encode", broken_encode)
        closed.clear()
    assert len(closed) == 1  # the shard's journal, closed by its _finish
    assert len(os.listdir("/proc/self/fd")) <= fds_before

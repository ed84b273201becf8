"""The service as a state machine, every step compared with the plain model (``tests.model``),
as PyRoaringBitMap tests its bitmap against ``set``.

Rules: submit one event (the ``POST /analytics`` validation, acceptance window included),
submit several at once (racing for shard slots), submit a batch (the ``POST /analytics/batch``
parser) with event ids that repeat within the batch and across steps, retry an event that had
an id, query an hour, query a range (step hour or day: totals and series are exact unions),
restart (shutdown, then a new service on the same data directory), delete or damage a
snapshot (truncate, flip a byte, another hour's, an older one of the same hour), compact an
hour (``shardstats compact``), verify an hour against the model (``shardstats verify``),
prune old hours (``shardstats prune``, server stopped), advance the clock. Eviction comes
from small limits drawn per run (``max_open_shards``, ``max_cached_hours``;
``max_commit_events`` splits group commits) and from the clock: idle hours close and
snapshot, the current hour moves on, and the acceptance window with it.

How trio meets a synchronous state machine: the service must live across steps, so each run
of the machine owns one trio loop in a thread (anyio's blocking portal) and every rule calls
into it and waits for the answer; between steps the loop is idle. The loop runs on trio's
``MockClock``: time moves only when ``advance_clock`` jumps it, together with the wall clock
the service reads, so idle closes and periodic snapshots happen exactly there.

Bounded for the default run; run longer by hand with, e.g.::

    SHARDSTATS_STATE_MACHINE_EXAMPLES=300 SHARDSTATS_STATE_MACHINE_STEPS=80 \\
        .venv/bin/pytest -q tests/shards/test_state_machine.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import astuple
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
import trio
import trio.testing
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.core import snapshot as codec
from shardstats.core.batch import parse_batch_columns
from shardstats.core.events import HOUR_MS, Event, EventKind, HourCounts
from shardstats.core.ranges import RangeQuery
from shardstats.core.validation import event_from_query
from shardstats.errors import CorruptFile, InvalidInput
from shardstats.ops.compact import compact_hour
from shardstats.ops.prune import prunable, prune
from shardstats.ops.verify import verify_hour
from shardstats.shards.service import Service
from shardstats.storage.datadir import DataDir
from tests.model import Model
from tests.shards.conftest import running
from tests.strategies import BASE_HOUR

T = TypeVar("T")

START_MS = BASE_HOUR * HOUR_MS + 17 * 60_000  # 17 minutes into an hour
PAST_S, FUTURE_S = 3 * 3600, 600  # the acceptance window of every run
EXAMPLES = int(os.environ.get("SHARDSTATS_STATE_MACHINE_EXAMPLES", "20"))
STEPS = int(os.environ.get("SHARDSTATS_STATE_MACHINE_STEPS", "30"))

names = st.sampled_from(["ann", "bob", "cy", "dé", "eve", "fay"]) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                  exclude_categories=["Cs", "Cc", "Zl", "Zp"]),
    min_size=1, max_size=6)
ids = st.none() | st.sampled_from([f"id-{i}" for i in range(5)])
kinds = st.sampled_from([EventKind.CLICK, EventKind.IMPRESSION])
# Where an event lies from now: anywhere in the last four hours or the next quarter hour,
# or exactly on an edge of the window or of the current hour.
EDGES = [-PAST_S * 1000 - 1, -PAST_S * 1000, FUTURE_S * 1000, FUTURE_S * 1000 + 1]
offsets = st.integers(-4 * HOUR_MS, 15 * 60_000) | st.sampled_from(EDGES) | st.sampled_from(
    ["hour_start", "hour_end"])
DAMAGE = ["delete", "truncate", "flip", "other_hour", "older"]


@dataclasses.dataclass(frozen=True)
class Draft:
    """An event as a client would send it: ``offset`` from the clock at the time of sending."""

    offset: int | str
    user: str
    kind: EventKind
    id: str | None

    def timestamp(self, now_ms: int) -> int:
        if self.offset == "hour_start":
            return now_ms // HOUR_MS * HOUR_MS
        if self.offset == "hour_end":
            return now_ms // HOUR_MS * HOUR_MS + HOUR_MS - 1
        assert isinstance(self.offset, int)
        return now_ms + self.offset


drafts = st.builds(Draft, offsets, names, kinds, ids)


async def _working() -> bool:
    """Whether anything still runs once every task is blocked: worker threads (the shards and
    the dictionary use trio's default thread limiter; loads are awaited by their caller)."""
    await trio.testing.wait_all_tasks_blocked()
    return trio.to_thread.current_default_thread_limiter().statistics().borrowed_tokens > 0


# Which file a rule acts on is drawn as an index into what the data directory holds then, and
# every rule draws all its values up front: trio runs ready tasks in a deliberately random
# order, so a replay of the same steps may find, say, one more version of a snapshot, and
# hypothesis insists that every replay draw the same kinds of values.
index = st.integers(0, 255)


def pick(items: list[T], at: int) -> T:
    return items[at % len(items)]


class ServiceMachine(RuleBasedStateMachine):
    sent_with_id = Bundle("sent_with_id")

    def __init__(self) -> None:
        super().__init__()
        self._stack = ExitStack()
        self.root = Path(self._stack.enter_context(tempfile.TemporaryDirectory()))
        self.mock_clock = trio.testing.MockClock()  # rate 0: moves only by ``jump``
        self.portal: BlockingPortal = self._stack.enter_context(
            start_blocking_portal("trio", backend_options={"clock": self.mock_clock}))
        self.wall = FixedClock(START_MS)
        self.model = Model()
        self.seen_ids: defaultdict[int, set[str]] = defaultdict(set)
        self.versions: defaultdict[int, list[bytes]] = defaultdict(list)  # seen snapshots
        self.settings = Settings(data_dir=str(self.root))
        self.service: Service | None = None
        self._serving: AbstractContextManager[Service] | None = None

    # -- plumbing --------------------------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``fn(*args)`` on the service's loop, then wait until the loop is idle: what
        the step set going (a shard's snapshot after its reply, an idle close) has finished,
        so every run of the same steps sees the same files (hypothesis replays steps)."""
        result = self.portal.call(fn, *args)
        while self.portal.call(_working):
            time.sleep(0.001)  # a worker thread is still busy; it wakes its task when done
        return result

    def start(self) -> None:
        self.datadir = DataDir(self.root)
        self.service = Service(self.settings, clock=self.wall, datadir=self.datadir)
        self._serving = self.portal.wrap_async_context_manager(running(self.service))
        self._serving.__enter__()

    def stop(self) -> None:
        if self._serving is not None:
            serving, self._serving, self.service = self._serving, None, None
            serving.__exit__(None, None, None)

    def teardown(self) -> None:
        try:
            self.stop()
        finally:
            self._stack.close()

    @property
    def svc(self) -> Service:
        assert self.service is not None
        return self.service

    @property
    def current_hour(self) -> int:
        return self.wall.now_ms() // HOUR_MS

    def accepted_by_model(self, timestamp: int) -> bool:
        now = self.wall.now_ms()
        return now - PAST_S * 1000 <= timestamp <= now + FUTURE_S * 1000

    def count(self, event: Event) -> None:
        """Into the model, unless its hour already holds its id (a retry: acknowledged only)."""
        if event.id is not None:
            if event.id in self.seen_ids[event.hour]:
                return
            self.seen_ids[event.hour].add(event.id)
        self.model.add(event)

    def remember_snapshots(self) -> None:
        """Keep every version of each hour's snapshot seen so far, to roll back to."""
        for hour in self.datadir.snapshot_hours():
            data = self.datadir.read_snapshot(hour)
            if data is None or data in self.versions[hour]:
                continue
            with contextlib.suppress(CorruptFile):  # one this machine damaged
                codec.decode(data)
                self.versions[hour].append(data)

    def check_hours(self, hours: Iterable[int]) -> None:
        for hour in sorted(hours):
            assert self.call(self.svc.query, hour) == self.model.counts(hour), hour

    # -- rules -----------------------------------------------------------------------------

    @initialize(open_shards=st.integers(1, 3), cached_hours=st.integers(0, 2),
                idle=st.sampled_from([30.0, 300.0]), preload=st.integers(0, 2),
                user_cache=st.sampled_from([0, 3, 1000]), commit=st.sampled_from([1, 3, 4096]))
    def open_service(self, open_shards: int, cached_hours: int, idle: float, preload: int,
                     user_cache: int, commit: int) -> None:
        self.settings = dataclasses.replace(
            self.settings, max_open_shards=open_shards, max_cached_hours=cached_hours,
            shard_idle_seconds=idle, snapshot_interval_seconds=10.0, preload_hours=preload,
            user_cache_size=user_cache, max_commit_events=commit, accept_past_seconds=PAST_S,
            accept_future_seconds=FUTURE_S)
        self.start()

    @rule(target=sent_with_id, draft=drafts)
    def submit(self, draft: Draft) -> Any:
        timestamp = draft.timestamp(self.wall.now_ms())
        query = {"timestamp": str(timestamp), "user": draft.user, "event": draft.kind.name.lower()}
        if draft.id is not None:
            query["id"] = draft.id
        try:
            event = event_from_query(urlencode(query).encode(), self.wall.now_ms(),
                                     self.svc.limits)
        except InvalidInput:
            assert not self.accepted_by_model(timestamp), (timestamp, self.wall.now_ms())
            return multiple()
        assert self.accepted_by_model(timestamp), (timestamp, self.wall.now_ms())
        assert event == Event(timestamp, draft.user, draft.kind, draft.id)
        self.call(self.svc.submit, event)
        self.count(event)
        return event if event.id is not None else multiple()

    @rule(target=sent_with_id, batch=st.lists(drafts, min_size=1, max_size=12))
    def submit_batch(self, batch: list[Draft]) -> Any:
        now = self.wall.now_ms()
        lines = []
        for draft in batch:
            line: dict[str, object] = {"timestamp": draft.timestamp(now), "user": draft.user,
                                       "event": draft.kind.name.lower()}
            if draft.id is not None:
                line["id"] = draft.id
            lines.append(json.dumps(line))
        parsed = parse_batch_columns("\n".join(lines).encode(), now, self.svc.limits)
        expected = [Event(d.timestamp(now), d.user, d.kind, d.id) for d in batch]
        accepted = [e for e in expected if self.accepted_by_model(e.timestamp_ms)]
        assert parsed.events == accepted
        if not accepted:
            return multiple()
        outcome = self.call(self.svc.submit_batch, parsed.columns)
        assert outcome == dict.fromkeys({e.hour for e in accepted}), outcome
        for event in accepted:
            self.count(event)
        return multiple(*(e for e in accepted if e.id is not None))

    @rule(batch=st.lists(drafts, min_size=2, max_size=10))
    def submit_concurrently(self, batch: list[Draft]) -> None:
        """Single submissions at once, across hours, with a query of each of those hours
        beside each: they race for the few shard slots and share group commits, and every
        answer lies between the counts before and after (nothing invented, nothing lost
        for a moment). Without ids: which of two equal ids came first would be a race."""
        now = self.wall.now_ms()
        events = [Event(d.timestamp(now), d.user, d.kind) for d in batch
                  if self.accepted_by_model(d.timestamp(now))]
        hours = sorted({e.hour for e in events})
        before = {hour: self.model.counts(hour) for hour in hours}
        for event in events:
            self.count(event)
        answers: list[tuple[int, HourCounts]] = []

        async def query(hour: int) -> None:
            answers.append((hour, await self.svc.query(hour)))

        async def submit_and_query() -> None:
            async with trio.open_nursery() as nursery:
                for event in events:
                    nursery.start_soon(self.svc.submit, event)
                    nursery.start_soon(query, event.hour)

        self.call(submit_and_query)
        for hour, got in answers:
            low, high = before[hour], self.model.counts(hour)
            assert all(a <= b <= c for a, b, c in zip(
                astuple(low), astuple(got), astuple(high), strict=True)), (hour, low, got, high)

    @rule(event=sent_with_id)
    def retry(self, event: Event) -> None:
        """A client that lost its 204 sends the same event again (same timestamp, same id):
        acknowledged, counted once, whatever happened in between (restarts, compaction)."""
        if not self.accepted_by_model(event.timestamp_ms):
            return  # the window has moved past it: a 400 now, as for any late event
        self.call(self.svc.submit, event)
        self.count(event)

    @rule(at=index)
    def query(self, at: int) -> None:
        near = range(self.current_hour - 5, self.current_hour + 2)
        self.check_hours([pick(sorted({*near, *self.model.hours}), at)])

    @rule(first=st.integers(-30, 1), length=st.integers(0, 30),
          step=st.sampled_from(["hour", "day"]))
    def query_range(self, first: int, length: int, step: str) -> None:
        first_hour = self.current_hour + first
        last_hour = first_hour + length
        total, series = self.call(self.svc.range_counts,
                                  RangeQuery(first_hour, last_hour, step))
        assert total == self.union(range(first_hour, last_hour + 1))
        if step == "hour":
            groups = [range(h, h + 1) for h in range(first_hour, last_hour + 1)]
        else:
            days = sorted({h // 24 for h in range(first_hour, last_hour + 1)})
            groups = [range(max(first_hour, d * 24), min(last_hour, d * 24 + 23) + 1)
                      for d in days]
        assert [(s.first_hour, s.counts) for s in series] == [
            (group.start, self.union(group)) for group in groups]

    def union(self, hours: range) -> HourCounts:
        """The model's answer for several hours together: the union of its user sets."""
        users: set[int | str] = set()
        clicks = impressions = 0
        for hour in hours:
            entry = self.model.hours.get(hour)
            if entry is not None:
                users |= entry.acknowledged.users
                clicks += entry.acknowledged.clicks
                impressions += entry.acknowledged.impressions
        return HourCounts(len(users), clicks, impressions)

    @rule()
    def restart(self) -> None:
        self.stop()
        self.remember_snapshots()  # shutdown wrote one for every open hour
        self.start()
        self.check_hours(self.model.hours)

    @rule(age=st.integers(1, 4), archive=st.booleans())
    def prune(self, age: int, archive: bool) -> None:
        """``shardstats prune`` (the server stopped, as it requires): the hours older than
        ``age`` hours are gone, answer zeros, and their event ids are forgotten."""
        self.stop()
        with self.datadir.lock:
            results = prunable(self.datadir, self.current_hour, age)
            failed = prune(self.datadir, results, self.root / "archive" if archive else None)
        assert failed == {}
        pruned = {r.hour for r in results}
        assert pruned == {h for h in self.model.hours if h < self.current_hour - age}, pruned
        for hour in pruned:
            del self.model.hours[hour]
            self.seen_ids.pop(hour, None)
            self.versions.pop(hour, None)
        self.start()
        self.check_hours({*self.model.hours, *pruned})

    @rule(how=st.sampled_from(DAMAGE), at=index, byte=st.integers(0, 2**16), other=index)
    def damage_snapshot(self, how: str, at: int, byte: int, other: int) -> None:
        hours = sorted(self.datadir.snapshot_hours())
        if not hours:
            return
        hour = pick(hours, at)
        path = self.datadir.snapshot_path(hour)
        current = self.datadir.read_snapshot(hour)
        if current is None:  # replaced between the listing and now: nothing to damage
            return
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(current[: len(current) // 2])
        elif how == "flip":
            byte %= len(current)
            path.write_bytes(current[:byte] + bytes([current[byte] ^ 0x5A]) + current[byte + 1:])
        elif how == "other_hour" and len(hours) > 1:
            source = pick([h for h in hours if h != hour], other)
            shutil.copyfile(self.datadir.snapshot_path(source), path)
        elif how == "older" and any(v != current for v in self.versions[hour]):
            older = [v for v in self.versions[hour] if v != current]
            path.write_bytes(pick(older, other))  # oldest first

    @rule(at=index)
    def compact(self, at: int) -> None:
        """``shardstats compact`` on an hour before the current one, server running."""
        hours = sorted(h for h in self.datadir.journal_hours() if h < self.current_hour)
        if not hours:
            return
        hour = pick(hours, at)
        result = compact_hour(self.datadir, hour)
        assert result.status in ("compacted", "already compact"), result.status
        assert result.events == self.model.counts(hour).clicks + self.model.counts(
            hour).impressions

    @rule(at=index)
    def verify(self, at: int) -> None:
        """``shardstats verify`` of an hour agrees with the model; the only problems it may
        find are the snapshots this machine damaged."""
        hours = sorted(self.datadir.journal_hours())
        if not hours:
            return
        hour = pick(hours, at)
        report = verify_hour(self.datadir, hour)
        expected = self.model.counts(hour)
        assert (report.unique_users, report.clicks, report.impressions) == (
            expected.unique_users, expected.clicks, expected.impressions), report
        assert all(p.startswith("snapshot") for p in report.problems), report.problems

    @rule(seconds=st.sampled_from([1, 11, 61, 301, 1800, 3600, 2 * 3600 + 7, 5 * 3600]))
    def advance_clock(self, seconds: int) -> None:
        self.wall.value += seconds * 1000
        self.mock_clock.jump(seconds)
        # Let the timers that came due run: idle closes (with their snapshots), periodic
        # snapshots; wait for what they do in worker threads too, one step at a time.
        self.call(trio.sleep, 0)
        self.remember_snapshots()

    @invariant()
    def within_limits(self) -> None:
        if self.service is not None:
            stats = self.service.statistics().registry
            assert stats.open_shards <= self.settings.max_open_shards, stats
            assert stats.cached_hours <= self.settings.max_cached_hours, stats


# Shrinking a failure replays many runs; hypothesis stops shrinking after five minutes on its
# own, so the test must be allowed longer than that to report what it found. A longer run
# asked for by hand has no time limit.
@pytest.mark.timeout(900 if (EXAMPLES, STEPS) == (20, 30) else 0)
def test_the_service_agrees_with_the_model() -> None:
    run_state_machine_as_test(ServiceMachine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))

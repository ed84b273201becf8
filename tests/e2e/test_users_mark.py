"""users.issued end to end, on real ``shardstats serve`` processes: a users.sqlite put back alone
from an older backup makes the server refuse to start (exit 4, the reason on stderr) instead of
undercounting unique users, and SIGKILL at any moment of an ingest of new users never makes the
next start refuse (no false alarm), with every acknowledged user still counted."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shardstats.storage import issued
from shardstats.storage.datadir import DataDir
from tests.e2e.test_server import (
    STOP_TIMEOUT,
    Workload,
    client_for,
    get_counts,
    kill_and_restart,
    load_then_signal,
    now_ms,
    post,
    recent_hours,
)
from tests.shards.test_deferred_snapshots_faults import put_back, read_files
from tools.loadgen.ledger import Counts, Event, Ledger

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory
    from tools.spawn import ShardstatsServer

pytestmark = pytest.mark.e2e
EXIT_DICTIONARY_BEHIND = 4


async def post_one(server: ShardstatsServer, event: Event) -> None:
    async with client_for(server.url) as client:
        assert (await post(client, event)).status_code == 204


async def stop(server: ShardstatsServer) -> None:
    server.terminate()
    assert await server.await_exit(STOP_TIMEOUT) == 0, server.log()


@pytest.mark.timeout(90)
async def test_serve_refuses_a_dictionary_older_than_its_journals(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    ts = now_ms()
    users = DataDir(data_dir).users_path
    server = await shardstats_server.astart(data_dir)
    await post_one(server, Event(ts, "alice", "click"))
    await stop(server)
    backup = read_files(users)
    server = await shardstats_server.astart(data_dir)
    await post_one(server, Event(ts, "bob", "click"))
    await stop(server)
    newest = read_files(users)

    put_back(users, backup)
    refused = shardstats_server.spawn(data_dir)
    assert await refused.await_exit(20) == EXIT_DICTIONARY_BEHIND, refused.log()
    message = refused.log()
    assert "refusing to start" in message and str(users) in message, message
    assert "users.issued" in message and "as a whole" in message, message
    assert "listening on" not in message

    put_back(users, newest)
    server = await shardstats_server.astart(data_dir)
    await post_one(server, Event(ts, "carol", "click"))
    async with client_for(server.url) as client:
        assert await get_counts(client, ts) == Counts(unique_users=3, clicks=3, impressions=0)
    await stop(server)


class NewUsers(Workload):
    """Mostly users never seen before: every commit assigns ids."""

    def user(self) -> str:
        if self.rng.random() < 0.1:
            return self.regulars[0]
        return f"new-{self.tag}-{self.rng.random()}"


@pytest.mark.timeout(180)
async def test_sigkill_while_new_users_arrive_never_refuses_the_next_start(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    rng = random.Random(14)
    now = now_ms()
    hours = recent_hours(now, [1, 3])
    ledger = Ledger()
    marks: list[issued.Mark | None] = []

    async def load(server: ShardstatsServer, tag: str) -> None:
        marks.append(DataDir(data_dir).read_users_mark())
        await load_then_signal(server, NewUsers(rng, hours, now, tag), ledger, rng,
                               signal.SIGKILL)

    # Each start checks the dictionary against the mark and the journals: a false alarm
    # would stop a start here (the server exits instead of getting ready).
    server, _ = await kill_and_restart(shardstats_server, data_dir, {}, ledger, 4, load)
    assert any(mark is not None and mark.ids > 0 for mark in marks[1:]), marks
    await stop(server)
    datadir = DataDir(data_dir)
    state = issued.dictionary_state(datadir.users_path)
    assert state is not None and datadir.read_users_mark() == issued.Mark(state.seed or 0,
                                                                          state.ids)

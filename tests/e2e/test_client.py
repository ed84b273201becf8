"""``shardstats.client`` against a real server: killed with SIGKILL and restarted on the same
port while a buffered sender streams, every event it was given is counted exactly once (the
retries carry the same event ids); a rejected event is reported and posted once; a sender
that cannot deliver before its deadline says so and hands back every event it did not deliver;
sends to an overloaded hour get 503 with Retry-After, wait and get through, each once.
The async client runs under trio and under asyncio."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from shardstats.client import (
    AsyncClient,
    Client,
    DeliveryFailed,
    Event,
    EventKind,
    EventRejected,
    Retry,
    make_event,
)
from shardstats.cluster.natsproc import free_ports
from tests.e2e.conftest import ServerFactory
from tools.spawn import ShardstatsServer

pytestmark = pytest.mark.e2e

HOUR = 3_600_000
USERS = 300


class CountingTransport(httpx.HTTPTransport):
    """Counts requests per path and the attempts that got no answer. ``kill_after_commit``
    arms it: the next batch gets its answer from the server (so it is durable), then the
    server is SIGKILLed and the client gets a broken connection instead: the retry of a batch
    the server has counted, deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.kill_after_commit: ShardstatsServer | None = None
        self.killed = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests[f"{request.method} {request.url.path}"] += 1
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.errors += 1
            raise
        self.statuses[response.status_code] += 1
        return self._maybe_kill(request, response)

    def _maybe_kill(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        server = self.kill_after_commit
        if server is None or request.url.path != "/analytics/batch" or response.status_code != 200:
            return response
        self.kill_after_commit = None
        server.kill()
        self.killed.set()
        self.errors += 1
        raise httpx.RemoteProtocolError("the server died before its answer was read")


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sync = CountingTransport()  # the bookkeeping and the kill, shared

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sync.requests[f"{request.method} {request.url.path}"] += 1
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError:
            self.sync.errors += 1
            raise
        await response.aread()
        return self.sync._maybe_kill(request, response)


def plan(n: int) -> list[tuple[str, EventKind]]:
    return [(f"user-{i % USERS}", "click" if i % 3 else "impression") for i in range(n)]


def expected(events: list[tuple[str, EventKind]]) -> dict[str, int]:
    kinds = Counter(kind for _, kind in events)
    return {"unique_users": len({user for user, _ in events}), "clicks": kinds["click"],
            "impressions": kinds["impression"]}


def counts(server: ShardstatsServer, timestamp: int) -> dict[str, int]:
    with Client(server.url) as client:
        found = client.counts(timestamp)
    return {"unique_users": found.unique_users, "clicks": found.clicks,
            "impressions": found.impressions}


def start_on_a_fixed_port(factory: ServerFactory, data_dir: Path) -> ShardstatsServer:
    """A server that ``restart`` starts again where its clients look for it."""
    return factory.start(data_dir, bind=f"127.0.0.1:{free_ports(1)[0]}")


def restart(server: ShardstatsServer) -> ShardstatsServer:
    """SIGKILL (unless done), then the same server again: data dir, port and log."""
    server.kill()
    time.sleep(0.2)  # the client meets refused connections meanwhile
    return server.start()


def test_buffered_sender_counts_every_event_once_across_kills(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = start_on_a_fixed_port(shardstats_server, data_dir)
    timestamp = int(time.time() * 1000)
    events = plan(3000)
    transport = CountingTransport()
    with Client(server.url, transport=transport, retry=Retry(deadline=60)) as client, \
            client.buffered(max_events=20, max_delay=0.05) as sender:
        for i, (user, kind) in enumerate(events):
            sender.send(user, kind, timestamp)
            if i == 1000:  # a batch counted, its answer lost: the retry must not count it
                transport.kill_after_commit = server
                assert transport.killed.wait(30)
                restart(server)
            if i == 2000:  # whatever the batch in flight was doing
                while sender.delivered < 1000:
                    time.sleep(0.005)
                assert sender.pending > 0
                restart(server)
    assert transport.errors >= 2
    assert sender.delivered == len(events) and sender.rejected == []
    assert sender.pending == 0
    assert counts(server, timestamp) == expected(events)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_async_buffered_sender_counts_every_event_once_across_a_kill(
        shardstats_server: ServerFactory, data_dir: Path, backend: str) -> None:
    server = start_on_a_fixed_port(shardstats_server, data_dir)
    timestamp = int(time.time() * 1000)
    events = plan(2000)
    transport = AsyncCountingTransport()

    async def main() -> int:
        async with AsyncClient(server.url, transport=transport,
                               retry=Retry(deadline=60)) as client:
            await client.send(*events[0], timestamp)  # one POST /analytics
            async with client.buffered(max_events=20, max_delay=0.05) as sender:
                for i, (user, kind) in enumerate(events[1:], 1):
                    await sender.send(user, kind, timestamp)
                    if i == 1000:  # a batch counted, its answer lost
                        transport.sync.kill_after_commit = server
                        killed = await anyio.to_thread.run_sync(transport.sync.killed.wait, 30)
                        assert killed
                        # the sender's task goes on retrying while the server restarts
                        await anyio.to_thread.run_sync(restart, server)
            assert sender.rejected == [] and sender.pending == 0
            return sender.delivered

    assert anyio.run(main, backend=backend) == len(events) - 1
    assert transport.sync.errors >= 1
    assert counts(server, timestamp) == expected(events)


def test_rejected_events_are_reported_and_posted_once(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = shardstats_server.start(data_dir)
    transport = CountingTransport()
    reported: list[tuple[Event, str]] = []
    with Client(server.url, transport=transport) as client:
        sent = client.send("carol", "impression")
        again = make_event("carol", "impression", sent.timestamp, sent.id)
        assert client.send_batch([again]) == []  # the same id: acknowledged, not counted
        assert client.counts(sent.timestamp).impressions == 1
        now = sent.timestamp
        too_old = now - 40 * 24 * HOUR  # outside the default 30-day acceptance window
        with pytest.raises(EventRejected) as rejected:
            client.send("alice", "click", too_old)
        assert (rejected.value.field, rejected.value.code) == ("timestamp", "too_old")
        assert "past" in rejected.value.reason
        assert transport.requests["POST /analytics"] == 2  # carol once, alice once

        with client.buffered(max_events=100, max_delay=10,
                             on_rejected=lambda e, why: reported.append((e, why))) as sender:
            good = [sender.send(f"user-{i}", "click", now) for i in range(10)]
            old = sender.send("bob", "impression", too_old)
            long = sender.send("u" * 300, "click", now)  # max_user_bytes is 256
    assert transport.requests["POST /analytics/batch"] == 2  # carol's resend; nothing retried
    assert [event for event, _ in reported] == [old, long]
    assert "256" in reported[1][1]
    assert sender.rejected == reported and sender.delivered == len(good)
    assert counts(server, now) == {"unique_users": 11, "clicks": 10, "impressions": 1}


def test_giving_up_hands_back_the_events_and_resending_them_counts_each_once(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = start_on_a_fixed_port(shardstats_server, data_dir)
    timestamp = int(time.time() * 1000)
    events = plan(500)
    with Client(server.url, retry=Retry(deadline=1.0, max_backoff=0.2)) as client:
        sender = client.buffered(max_events=50, max_delay=0.05)
        with pytest.raises(DeliveryFailed) as failed, sender:
            for i, (user, kind) in enumerate(events):
                sender.send(user, kind, timestamp)
                if i == 200:
                    while sender.delivered < 100:
                        time.sleep(0.005)
                    server.kill()
        undelivered = failed.value.events
        assert "deadline of 1 s" in str(failed.value)
        assert sender.delivered + len(undelivered) == len(events)
        with pytest.raises(DeliveryFailed):
            sender.send("late", "click", timestamp)  # a stopped sender says so

        server.start()  # again, on its port
        assert client.send_batch(undelivered) == []
    assert counts(server, timestamp) == expected(events)


def test_an_overloaded_hour_answers_503_and_every_send_gets_through_once(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    env = {"SHARDSTATS_INBOX_SIZE": "4", "SHARDSTATS_MAX_COMMIT_EVENTS": "2"}
    server = shardstats_server.start(data_dir, env)
    timestamp = int(time.time() * 1000)
    transport = CountingTransport()
    failures: list[BaseException] = []

    def sends(client: Client, seed: int) -> None:
        try:
            for i in range(15):
                client.send(f"t{seed}-{i}", "click", timestamp)
        except BaseException as exc:  # reported below
            failures.append(exc)

    with Client(server.url, transport=transport, retry=Retry(deadline=60)) as client:
        threads = [threading.Thread(target=sends, args=(client, seed)) for seed in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert failures == []
    assert transport.statuses[503] > 0, "the inbox never filled; nothing was tested"
    assert transport.statuses[204] == 32 * 15
    assert counts(server, timestamp) == {"unique_users": 480, "clicks": 480, "impressions": 0}

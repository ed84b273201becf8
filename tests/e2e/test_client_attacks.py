"""``shardstats.client`` against a real server, attacked: a server whose batch limits are
below the sender's batches, users too long for a query string, timestamps in the future, a
listener that never answers, 16 threads on one sender across a SIGKILL, an async sender
cancelled mid-stream whose unsent events are sent again: every event counted exactly once."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import trio

from shardstats.client import AsyncClient, Client, EventRejected, Retry, make_event
from shardstats.cluster.natsproc import free_ports
from tests.e2e.conftest import ServerFactory

pytestmark = pytest.mark.e2e


def test_a_sender_with_batches_above_max_batch_lines_delivers_every_event_once(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = shardstats_server.start(data_dir, {"SHARDSTATS_MAX_BATCH_LINES": "7"})
    now = int(time.time() * 1000)
    with Client(server.url, retry=Retry(deadline=30)) as client:
        with client.buffered(max_events=50, max_delay=3600) as sender:
            for i in range(120):
                sender.send(f"user-{i}", "click", now)
        assert sender.delivered == 120 and sender.rejected == []
        found = client.counts(now)
    assert (found.unique_users, found.clicks, found.impressions) == (120, 120, 0)


def test_single_sends_of_bad_events_are_rejected_not_retried(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = shardstats_server.start(data_dir)
    now = int(time.time() * 1000)
    with Client(server.url, retry=Retry(deadline=5)) as client:
        with pytest.raises(EventRejected) as future:
            client.send("alice", "click", now + 3_600_000)  # 10 minutes ahead at most
        assert future.value.field == "timestamp"
        for size in (300, 20_000):  # beyond max_user_bytes, and the query limit
            started = time.monotonic()
            with pytest.raises(EventRejected) as long:
                client.send("u" * size, "click", now)
            assert long.value.field in ("user", "query"), size
            assert time.monotonic() - started < 5, "retried"
        with pytest.raises(ValueError, match="send_batch"):  # httpx refuses the URL
            client.send("u" * 200_000, "click", now)
        [(_, why)] = client.send_batch([make_event("u" * 200_000, "click", now)])
        assert "256" in why
        assert client.send("é" * 100, "click", now).user == "é" * 100
        assert client.counts(now).clicks == 1


def test_a_server_that_never_answers_then_a_real_one_every_event_counted_once(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    # A listener that accepts connections and never reads nor answers holds the port; the
    # sender's attempts time out and are retried; then the real server takes the port.
    port = free_ports(1)[0]
    hole = socket.create_server(("127.0.0.1", port), backlog=64)
    accepted: list[socket.socket] = []

    def swallow() -> None:
        while True:
            try:
                accepted.append(hole.accept()[0])
            except OSError:
                return

    swallower = threading.Thread(target=swallow, daemon=True)
    swallower.start()
    now = int(time.time() * 1000)
    with Client(f"http://127.0.0.1:{port}", timeout=0.3,
                retry=Retry(deadline=60, max_backoff=0.2)) as client:
        with client.buffered(max_events=10, max_delay=0.01) as sender:
            for i in range(50):
                sender.send(f"user-{i}", "click", now)
            deadline = time.monotonic() + 10
            while not accepted:
                assert time.monotonic() < deadline, "no attempt reached the listener"
                time.sleep(0.01)
            time.sleep(0.7)  # a few attempts time out
            assert sender.delivered == 0
            hole.close()
            swallower.join(10)
            for conn in accepted:
                conn.close()
            server = shardstats_server.start(data_dir, bind=f"127.0.0.1:{port}")
        assert sender.delivered == 50
        found = client.counts(now)
    assert (found.unique_users, found.clicks) == (50, 50)
    assert server.running()


def test_many_threads_share_one_buffered_sender_across_a_kill(
        shardstats_server: ServerFactory, data_dir: Path) -> None:
    server = shardstats_server.start(data_dir, bind=f"127.0.0.1:{free_ports(1)[0]}")
    now = int(time.time() * 1000)
    failures: list[BaseException] = []
    with Client(server.url, retry=Retry(deadline=60)) as client:
        with client.buffered(max_events=37, max_delay=0.01, max_buffer=200) as sender:
            def sends(seed: int) -> None:
                try:
                    for i in range(300):
                        sender.send(f"t{seed}-{i}", "impression" if i % 2 else "click", now)
                except BaseException as exc:  # reported below
                    failures.append(exc)

            threads = [threading.Thread(target=sends, args=(seed,)) for seed in range(16)]
            for thread in threads:
                thread.start()
            while sender.delivered < 1500:
                time.sleep(0.005)
            server.kill()
            time.sleep(0.3)
            server.start()
            for thread in threads:
                thread.join(120)
        assert failures == [] and sender.delivered == 16 * 300
        found = client.counts(now)
    assert (found.unique_users, found.clicks, found.impressions) == (4800, 2400, 2400)


@pytest.mark.parametrize("cancel_after", [0.05, 0.2, 0.5])
def test_a_cancelled_async_sender_hands_back_what_it_did_not_deliver(
        shardstats_server: ServerFactory, data_dir: Path, cancel_after: float) -> None:
    # Cancelled at some point while batches are posted: unsent() holds everything not known
    # to be delivered (maybe counted already: the ids make resending safe); nothing is lost.
    server = shardstats_server.start(data_dir)
    now = int(time.time() * 1000)

    async def main() -> tuple[int, int]:
        async with AsyncClient(server.url) as client:
            sender = client.buffered(max_events=25, max_delay=0.001)
            sent = 0
            with trio.move_on_after(cancel_after):
                async with sender:
                    for i in range(3000):
                        await sender.send(f"user-{i}", "click", now)
                        sent += 1
                        if i % 10 == 0:
                            await trio.sleep(0.001)
            unsent = sender.unsent()
            assert await client.send_batch(unsent) == []
            return sent, len(unsent)

    sent, unsent = trio.run(main)
    assert sent > 0
    with Client(server.url) as client:
        found = client.counts(now)
    assert (found.unique_users, found.clicks) == (sent, sent), (sent, unsent)

"""When the buffered senders post: size and time thresholds, flush, close, back-pressure and a
failure handed to the caller. The server is ``httpx.MockTransport`` answering batches the way
``/analytics/batch`` does (per-line verdicts); tests against the real server are in
``tests/e2e/test_client.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import trio

from shardstats.client import AsyncClient, Client, DeliveryFailed, Retry

WAIT = 10.0  # bound on waiting for a background post (never reached when things work)


class FakeServer:
    """Accepts every line; ``reject`` lists users it refuses; records each batch's size."""

    def __init__(self, reject: frozenset[str] = frozenset(), status: int = 200) -> None:
        self.batches: list[int] = []
        self.reject = reject
        self.status = status
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        lines = [json.loads(line) for line in request.content.split(b"\n")]
        with self.lock:
            self.batches.append(len(lines))
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "nope"})
        results = ["rejected: user refused" if line["user"] in self.reject else "accepted"
                   for line in lines]
        return httpx.Response(200, json={"accepted": results.count("accepted"),
                                         "errors": [], "results": results})


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the sender did not post in time"
        time.sleep(0.005)


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while True:
            if condition():
                return
            await trio.sleep(0.005)


def test_a_full_buffer_goes_out_without_waiting_for_the_delay() -> None:
    server = FakeServer()
    with Client(transport=httpx.MockTransport(server)) as client, \
            client.buffered(max_events=10, max_delay=3600) as sender:
        for i in range(25):
            sender.send(f"u{i}", "click", 1)
        eventually(lambda: sender.delivered == 20)
        assert server.batches == [10, 10] and sender.pending == 5
    assert server.batches == [10, 10, 5] and sender.delivered == 25  # the rest on close


def test_a_partial_batch_goes_out_after_max_delay() -> None:
    server = FakeServer()
    with Client(transport=httpx.MockTransport(server)) as client, \
            client.buffered(max_events=1000, max_delay=0.05) as sender:
        for i in range(3):
            sender.send(f"u{i}", "impression", 1)
        eventually(lambda: sender.delivered == 3)
        assert server.batches == [3]


def test_flush_sends_what_is_buffered_now() -> None:
    server = FakeServer(reject=frozenset({"bad"}))
    seen: list[str] = []
    with Client(transport=httpx.MockTransport(server)) as client, \
            client.buffered(max_events=1000, max_delay=3600,
                            on_rejected=lambda event, why: seen.append(event.user)) as sender:
        sender.send("good", "click", 1)
        sender.send("bad", "click", 1)
        sender.flush()
        assert server.batches == [2] and sender.pending == 0
        assert sender.delivered == 1 and seen == ["bad"]
        assert [event.user for event, _ in sender.rejected] == ["bad"]


def test_send_waits_while_max_buffer_events_wait() -> None:
    gate = threading.Event()
    server = FakeServer()

    def slow(request: httpx.Request) -> httpx.Response:
        gate.wait(WAIT)
        return server(request)

    with Client(transport=httpx.MockTransport(slow)) as client, \
            client.buffered(max_events=2, max_delay=3600, max_buffer=4) as sender:
        for i in range(2):  # in flight, held at the gate
            sender.send(f"u{i}", "click", 1)
        eventually(lambda: server.batches == [] and sender.pending == 2 and
                   not sender._buffer)  # taken by the thread
        for i in range(4):
            sender.send(f"v{i}", "click", 1)  # the buffer is full now
        blocked = threading.Thread(target=sender.send, args=("w", "click", 1))
        blocked.start()
        blocked.join(0.2)
        assert blocked.is_alive()  # waiting for room
        gate.set()
        blocked.join(WAIT)
        assert not blocked.is_alive()
    assert sender.delivered == 7


def test_a_sender_that_gives_up_raises_on_send_and_on_close_with_every_event() -> None:
    server = FakeServer(status=401)
    with Client(transport=httpx.MockTransport(server), retry=Retry(deadline=1)) as client:
        sender = client.buffered(max_events=2, max_delay=3600)
        sent = [sender.send(f"u{i}", "click", 1) for i in range(2)]  # a full batch: posted
        eventually(lambda: sender._failure is not None)
        with pytest.raises(DeliveryFailed, match="HTTP 401"):
            sender.send("late", "click", 1)
        with pytest.raises(DeliveryFailed) as failed:
            sender.close()
        assert list(failed.value.events) == sent


async def test_async_sender_thresholds_and_flush_on_exit() -> None:
    server = FakeServer()
    async with AsyncClient(transport=httpx.MockTransport(server)) as client:
        async with client.buffered(max_events=10, max_delay=3600) as sender:
            for i in range(25):
                await sender.send(f"u{i}", "click", 1)
            await until(lambda: sender.delivered == 20)
            assert server.batches == [10, 10]
        assert server.batches == [10, 10, 5] and sender.delivered == 25

        async with client.buffered(max_events=1000, max_delay=0.05) as sender:
            await sender.send("late", "impression", 1)
            await until(lambda: sender.delivered == 1)


async def test_async_sender_flushes_when_its_block_raises() -> None:
    server = FakeServer()
    async with AsyncClient(transport=httpx.MockTransport(server)) as client:
        with pytest.raises(ZeroDivisionError):
            async with client.buffered(max_events=1000, max_delay=3600) as sender:
                await sender.send("u", "click", 1)
                1 / 0  # noqa: B018
        assert server.batches == [1] and sender.delivered == 1


async def test_a_cancelled_async_sender_keeps_what_it_did_not_send() -> None:
    server = FakeServer()
    async with AsyncClient(transport=httpx.MockTransport(server)) as client:
        with trio.move_on_after(0.05):
            async with client.buffered(max_events=1000, max_delay=3600) as sender:
                sent = [await sender.send(f"u{i}", "click", 1) for i in range(3)]
                await trio.sleep_forever()
        assert server.batches == []
        assert sender.unsent() == sent


def test_a_sender_never_closed_is_flushed_when_the_interpreter_exits() -> None:
    script = """
import httpx
from shardstats.client import Client

def answer(request):
    lines = request.content.split(b"\\n")
    print("posted", len(lines), flush=True)
    return httpx.Response(200, json={"accepted": len(lines), "errors": [],
                                     "results": ["accepted"] * len(lines)})

sender = Client(transport=httpx.MockTransport(answer)).buffered(max_delay=3600)
for i in range(3):
    sender.send(f"u{i}", "click", 1)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == "posted 3\n"

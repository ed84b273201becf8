"""Hostile uses of the client found by review: each test names what went wrong before."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import pytest
import trio

from shardstats.client import AsyncClient, Client, DeliveryFailed, make_event
from tests.client.test_senders import FakeServer, eventually


async def test_a_cancelled_async_send_did_not_buffer_its_event() -> None:
    # Trio's rule: an operation that raised Cancelled did not happen. The event was appended
    # before the checkpoint, so a caller who sent it again (a new id) had it counted twice.
    server = FakeServer()
    async with AsyncClient(transport=httpx.MockTransport(server)) as client:
        async with client.buffered(max_events=1000, max_delay=3600) as sender:
            with trio.CancelScope() as scope:
                scope.cancel()
                await sender.send("u", "click", 1)
            assert scope.cancelled_caught
            assert sender.pending == 0
        assert server.batches == [] and sender.delivered == 0


@pytest.mark.parametrize("user", ["\udcff", "ok\ud800"])
def test_a_user_that_is_not_utf8_is_refused_at_send(user: str) -> None:
    # Before: accepted by send, then the batch failed to encode in the sender's thread, which
    # stopped with a UnicodeEncodeError: the other events of that batch were in no exception.
    with pytest.raises(ValueError, match="UTF-8"):
        make_event(user, "click", 1)
    with pytest.raises(ValueError, match="UTF-8"):
        make_event("u", "click", 1, id=user)
    server = FakeServer()
    with Client(transport=httpx.MockTransport(server)) as client, \
            client.buffered(max_events=1000, max_delay=3600) as sender:
        sender.send("good", "click", 1)
        with pytest.raises(ValueError):
            sender.send(user, "click", 1)
    assert sender.delivered == 1


class LineLimitedServer(FakeServer):
    """Answers 413 to a body of more than ``max_lines`` lines (max_batch_lines), or holding the
    user "huge" (as if that line alone were more than max_batch_bytes)."""

    def __init__(self, max_lines: int) -> None:
        super().__init__()
        self.max_lines = max_lines
        self.refused = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        lines = request.content.split(b"\n")
        if len(lines) > self.max_lines or any(b'"huge"' in line for line in lines):
            with self.lock:
                self.refused += 1
            return httpx.Response(413, json={"error": "too many lines"},
                                  headers={"connection": "close"})
        return super().__call__(request)


def test_a_batch_refused_with_413_is_split_and_every_event_delivered() -> None:
    server = LineLimitedServer(max_lines=3)
    with Client(transport=httpx.MockTransport(server)) as client, \
            client.buffered(max_events=10, max_delay=3600) as sender:
        sent = [sender.send(f"u{i}", "click", 1) for i in range(10)]
    assert sender.delivered == 10 and sender.rejected == []
    assert sum(server.batches) == 10 and server.refused > 0
    assert all(size <= 3 for size in server.batches)
    assert len(sent) == 10


def test_one_event_too_large_on_its_own_is_rejected_not_the_batch() -> None:
    server = LineLimitedServer(max_lines=100)
    with Client(transport=httpx.MockTransport(server)) as client:
        events = [make_event(f"u{i}", "click", 1) for i in range(4)]
        events.insert(2, make_event("huge", "click", 1))
        rejected = client.send_batch(events)
    assert [event.user for event, _ in rejected] == ["huge"]
    assert "413" in rejected[0][1]
    assert sum(server.batches) == 4



def test_giving_up_on_one_half_of_a_split_batch_hands_back_both_halves() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.content.count(b"\n") >= 2:  # three lines or more
            return httpx.Response(413, json={"error": "too many lines"})
        return httpx.Response(401, json={"error": "missing or invalid bearer token"})

    with Client(transport=httpx.MockTransport(answer)) as client:
        events = [make_event(f"u{i}", "click", 1) for i in range(5)]
        with pytest.raises(DeliveryFailed, match="HTTP 401") as failed:
            client.send_batch(events)
    assert sorted(failed.value.events, key=events.index) == events


def test_a_200_with_an_unreadable_answer_is_retried() -> None:
    # Rule 2: an attempt whose outcome is unknown is retried (same ids, so safe). A 200 whose
    # body is not the batch answer (a proxy's page, a truncated JSON) is such an attempt.
    server = FakeServer()
    answers = iter([httpx.Response(200, text="<html>gateway</html>"),
                    httpx.Response(200, text='{"accepted": 2, "res'),
                    httpx.Response(200, json={"unexpected": True})])
    lock = threading.Lock()

    def flaky(request: httpx.Request) -> httpx.Response:
        with lock:
            answer = next(answers, None)
        return answer if answer is not None else server(request)

    with Client(transport=httpx.MockTransport(flaky)) as client:
        events = [make_event(f"u{i}", "click", 1) for i in range(2)]
        assert client.send_batch(events) == []
    assert server.batches == [2]


def test_a_forked_child_cannot_send_through_its_parents_sender() -> None:
    # The child has a copy of the sender but not its thread: its sends were buffered, never
    # posted, and exit flushed nothing, silently. Now send says so; the child's exit neither
    # posts the parent's buffered events nor hangs.
    script = """
import os, sys
import httpx
from shardstats.client import Client

def answer(request):
    lines = request.content.split(b"\\n")
    print(os.getpid() == parent, "posted", len(lines), flush=True)
    return httpx.Response(200, json={"accepted": len(lines), "errors": [],
                                     "results": ["accepted"] * len(lines)})

parent = os.getpid()
sender = Client(transport=httpx.MockTransport(answer)).buffered(max_delay=3600)
sender.send("before", "click", 1)
pid = os.fork()
if pid == 0:
    try:
        sender.send("child", "click", 1)
    except RuntimeError as exc:
        print("child refused:", "fork" in str(exc), flush=True)
    sys.exit(0)  # atexit runs: the parent's event is not posted from here
os.waitpid(pid, 0)
sender.send("after", "click", 1)
"""
    done = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "child refused: True\nTrue posted 2\n"


def test_a_sender_whose_client_was_closed_hands_back_every_event() -> None:
    # Rule 4: nothing is dropped without an exception that carries it. The client closed
    # under the sender made its thread fail with httpx's RuntimeError, and the batch and the
    # buffer were in no exception.
    server = FakeServer()
    client = Client(transport=httpx.MockTransport(server))
    sender = client.buffered(max_events=10, max_delay=3600)  # posted on close
    client.close()
    sent = [sender.send(f"u{i}", "click", 1) for i in range(3)]
    with pytest.raises(DeliveryFailed, match="closed") as failed:
        sender.close()
    assert sorted(failed.value.events, key=sent.index) == sent
    assert isinstance(failed.value.__cause__, RuntimeError)


def test_an_on_rejected_that_raises_stops_the_sender_without_losing_events() -> None:
    server = FakeServer(reject=frozenset({"bad"}))

    def refuse(event: object, reason: str) -> None:
        raise KeyError("callback broke")

    with Client(transport=httpx.MockTransport(server)) as client:
        sender = client.buffered(max_events=2, max_delay=3600, on_rejected=refuse)
        first = [sender.send("bad", "click", 1), sender.send("good", "click", 1)]
        eventually(lambda: sender._failure is not None)
        with pytest.raises(DeliveryFailed, match="on_rejected") as failed:
            sender.close()
    assert failed.value.events == ()  # the batch was delivered (one line rejected)
    assert sender.delivered == 1 and [e for e, _ in sender.rejected] == first[:1]
    assert isinstance(failed.value.__cause__, KeyError)


async def test_an_async_sender_whose_client_was_closed_hands_back_every_event() -> None:
    server = FakeServer()
    client = AsyncClient(transport=httpx.MockTransport(server))
    await client.aclose()
    with pytest.raises(DeliveryFailed, match="closed") as failed:
        async with client.buffered(max_events=10, max_delay=3600) as sender:
            sent = [await sender.send(f"u{i}", "click", 1) for i in range(3)]
    assert sorted(failed.value.events, key=sent.index) == sent
    assert sender.unsent() == list(failed.value.events)
    assert isinstance(failed.value.__cause__, RuntimeError)

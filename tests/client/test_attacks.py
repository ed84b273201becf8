"""Hostile uses of the client found by review: each test names what went wrong before."""

from __future__ import annotations

import httpx
import pytest
import trio

from shardstats.client import AsyncClient, Client, make_event
from tests.client.test_senders import FakeServer


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


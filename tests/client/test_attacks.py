"""Hostile uses of the client found by review: each test names what went wrong before."""

from __future__ import annotations

import httpx
import trio

from shardstats.client import AsyncClient
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


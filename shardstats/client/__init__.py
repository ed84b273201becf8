"""Send events to shardstats from Python, blocking or async (trio or asyncio), on httpx.

    from shardstats.client import Client

    with Client("http://127.0.0.1:8080") as client:
        client.send("alice", "click")             # one POST, returns once it is durable
        with client.buffered() as sender:         # batches to /analytics/batch
            for user in users:
                sender.send(user, "impression")   # returns at once; flushed on leaving

Every event gets an id when it is created and keeps it through every retry, so a retry after
a timeout, a 5xx or a server restart is counted once. See ``_core`` for the rules.
"""

from shardstats.client._async import AsyncBufferedSender, AsyncClient
from shardstats.client._core import (
    ClientError,
    DeliveryFailed,
    Event,
    EventKind,
    EventRejected,
    Retry,
    make_event,
)
from shardstats.client._sync import BufferedSender, Client, Counts

__all__ = [
    "AsyncBufferedSender",
    "AsyncClient",
    "BufferedSender",
    "Client",
    "ClientError",
    "Counts",
    "DeliveryFailed",
    "Event",
    "EventKind",
    "EventRejected",
    "Retry",
    "make_event",
]

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from shardstats.shards.service import Service


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    """Run a service for the duration of the block, then shut it down gracefully."""
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        with trio.fail_after(30):
            await service.wait_ready()
        try:
            yield service
        finally:
            with trio.fail_after(30):
                await service.shutdown()

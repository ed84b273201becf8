"""A running app for HTTP tests: lifespan started, service ready, test client in hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.http.app import create_app
from shardstats.shards.service import Service


@asynccontextmanager
async def ready_client(settings: Settings, now_ms: int | None = None) -> AsyncIterator[Any]:
    clock = FixedClock(now_ms) if now_ms is not None else None
    service = Service(settings, clock=clock)
    async with create_app(settings, service).test_app() as test_app:
        with trio.fail_after(10):
            await service.wait_ready()
        yield test_app.test_client()

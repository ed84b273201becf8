"""A running app for HTTP tests on given settings: lifespan started, service ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.http.app import create_app
from shardstats.shards.service import Service
from tests.http.conftest import Client, wait_healthy


@asynccontextmanager
async def ready_client(settings: Settings, now_ms: int | None = None) -> AsyncIterator[Client]:
    """A client of the app as served, its clock fixed at ``now_ms`` (the real one if None)."""
    service = Service(settings, clock=FixedClock(now_ms) if now_ms is not None else None)
    app = create_app(settings, service)
    async with app.quart.test_app():
        client = Client(app)
        await wait_healthy(client)
        yield client

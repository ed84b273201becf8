"""Clients that hang up mid-request never cost an acknowledged event.

Quart-Trio cancels a request's task when its client disconnects. With two open shards and
batches spanning four hours, nearly every request opens an hour and evicts a busy one, so the
hang-ups land inside opens, loads and evictions. Afterwards every acknowledged event is
counted: on the running server, after a graceful restart, and after a restart with every
snapshot deleted (the answers must not change either way).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from tests.e2e.test_server import (
    Workload,
    answers,
    assert_bounds,
    client_for,
    delete_snapshots,
    now_ms,
    post,
    recent_hours,
)
from tools.loadgen.ledger import Event, Ledger

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory

TIGHT = {"SHARDSTATS_MAX_OPEN_SHARDS": "2", "SHARDSTATS_MAX_CACHED_HOURS": "1"}
BATCH_CLIENTS = 8
SINGLE_CLIENTS = 3
ROUNDS = 40


def body(events: list[Event]) -> bytes:
    return "\n".join(json.dumps({"timestamp": ts, "user": user, "event": kind})
                     for ts, user, kind in events).encode()


async def hanging_up_batches(url: str, workload: Workload, ledger: Ledger,
                             rng: random.Random) -> None:
    for _ in range(ROUNDS):
        events = [workload.event() for _ in range(rng.randint(5, 60))]
        for event in events:
            ledger.record_sent(event)
        # A timeout of a few milliseconds: httpx gives up and closes the connection while
        # the server is still working on the request (often inside an open or eviction).
        patience = rng.choice([0.002, 0.004, 0.006, 0.01, 0.02, 10.0])
        async with httpx.AsyncClient(base_url=url, timeout=patience) as client:
            try:
                response = await client.post("/analytics/batch", content=body(events))
            except httpx.TimeoutException:
                continue
        ledger.statuses[response.status_code] += 1
        if response.status_code != 200:
            assert response.status_code == 503, (response.status_code, response.text[:300])
            continue
        verdicts = [v for v in response.json()["results"] if v != "blank"]
        assert len(verdicts) == len(events), verdicts[:5]
        for event, verdict in zip(events, verdicts, strict=True):
            if verdict == "accepted":
                ledger.record_acked(event)


async def single_posts(url: str, workload: Workload, ledger: Ledger) -> None:
    async with client_for(url) as client:
        for _ in range(ROUNDS):
            event = workload.event()
            ledger.record_sent(event)
            response = await post(client, event)
            ledger.statuses[response.status_code] += 1
            if response.status_code == 204:
                ledger.record_acked(event)
            else:
                assert response.status_code == 503, (response.status_code, response.text)


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_hang_ups_during_opens_and_evictions_lose_no_acknowledged_event(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    rng = random.Random(7)
    now = now_ms()
    hours = recent_hours(now, [1, 2, 3])  # few hours: evictions of busy shards
    ledger = Ledger()
    server = await shardstats_server.astart(data_dir, TIGHT)
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            for n in range(BATCH_CLIENTS):
                workload = Workload(random.Random(rng.random()), hours, now, tag=f"b{n}")
                nursery.start_soon(hanging_up_batches, server.url, workload, ledger,
                                   random.Random(rng.random()))
            for n in range(SINGLE_CLIENTS):
                workload = Workload(random.Random(rng.random()), hours, now, tag=f"s{n}")
                nursery.start_soon(single_posts, server.url, workload, ledger)
    assert ledger.acknowledged > 500, ledger.statuses  # the test did real work

    before = await answers(server.url, ledger.hours)
    assert_bounds(before, ledger)
    server.terminate()
    assert await server.await_exit(25) == 0, server.log()

    server = await shardstats_server.astart(data_dir, TIGHT)
    assert await answers(server.url, ledger.hours) == before
    server.terminate()
    assert await server.await_exit(25) == 0, server.log()

    delete_snapshots(data_dir)
    server = await shardstats_server.astart(data_dir, {})
    assert await answers(server.url, ledger.hours) == before

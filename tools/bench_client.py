"""What ``shardstats.client``'s buffered sender costs over posting the same batches by hand.

    python -m tools.bench_client [--events 50000] [--batch 1000] [--rounds 3]

One server on a temporary data directory; each round posts ``--events`` events as NDJSON
batches of ``--batch`` with plain httpx (one request at a time, bodies built by the client's
own encoder), then sends as many through ``Client.buffered(max_events=--batch)``, and prints
both rates and their ratio (paired in time, so a noisy machine moves both).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from shardstats.client import Client, make_event
from shardstats.client._core import batch_body
from tools.spawn import ShardstatsServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, size = args.events, args.batch
    with tempfile.TemporaryDirectory() as tmp, \
            ShardstatsServer(Path(tmp) / "data", Path(tmp) / "server.log") as server, \
            Client(server.url) as client, httpx.Client(base_url=server.url, timeout=30) as raw:
        for round_ in range(args.rounds):
            ts = int(time.time() * 1000)
            started = time.perf_counter()
            for first in range(0, n, size):
                body = batch_body([make_event(f"u{i % 5000}", "click", ts)
                                   for i in range(first, min(n, first + size))])
                answer = raw.post("/analytics/batch", content=body).json()
                assert answer["accepted"] == min(size, n - first), answer
            raw_rate = n / (time.perf_counter() - started)
            started = time.perf_counter()
            with client.buffered(max_events=size, max_delay=0.05) as sender:
                for i in range(n):
                    sender.send(f"u{i % 5000}", "click", ts)
            rate = n / (time.perf_counter() - started)
            assert sender.delivered == n
            print(f"round {round_ + 1}: plain httpx {raw_rate:,.0f} events/s, "
                  f"BufferedSender {rate:,.0f} events/s, ratio {rate / raw_rate:.2f}")

if __name__ == "__main__":
    main()

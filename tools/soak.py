"""Crash soak: SIGKILL a loaded server at random moments, restart it, check nothing is lost.

    python tools/soak.py [--cycles 50] [--clients 16] [--data-dir DIR] [--seed N]

Each cycle starts ``shardstats serve`` on the same data directory with small bounds (so
snapshots, evictions and reloads happen all the time and kills land in the middle of them),
runs concurrent clients posting to the current and past hours with new and repeated users
(and reading hours back), kills the server with SIGKILL a random delay after the cycle's first
acknowledgement, restarts it, and checks every hour: acknowledged ⊆ counted ⊆ sent, for
clicks, impressions and unique users. Prints a line per cycle and a summary; exits 1 if any
acknowledged event was lost or anything was counted that was never sent.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: make ``tools`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.loadgen.ledger import CheckResult, Counts, Event, Ledger, check
from tools.loadgen.workload import HOUR_MS
from tools.spawn import ShardstatsServer

FLOWING_WITHIN = 10.0  # seconds for the clients' first acknowledgement in a cycle
STRESS_ENV = {
    "SHARDSTATS_MAX_OPEN_SHARDS": "3",
    "SHARDSTATS_MAX_CACHED_HOURS": "2",
    "SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": "0.2",
    "SHARDSTATS_SHARD_IDLE_SECONDS": "0.3",
    "SHARDSTATS_PRELOAD_HOURS": "1",
    "SHARDSTATS_USER_CACHE_SIZE": "50",
    "SHARDSTATS_LOG_LEVEL": "warning",
}


def read_back(ledger: Ledger, url: str) -> CheckResult:
    with httpx.Client(base_url=url, timeout=30) as client:
        observed = {hour: Counts.from_json(client.get(f"/analytics?timestamp={hour * HOUR_MS}")
                                           .json())
                    for hour in sorted(ledger.hours)}
    return check(ledger, observed)


def missing(result: CheckResult) -> tuple[int, int]:
    """(lost, invented): how far below and above its bounds each field of each hour is."""
    lost = invented = 0
    for hour in result.hours:
        for name, seen in hour.observed.as_dict().items():
            lost += max(0, getattr(hour.low, name) - seen)
            invented += max(0, seen - getattr(hour.high, name))
    return lost, invented


def client_loop(url: str, ledger: Ledger, lock: threading.Lock, stop: threading.Event,
                flowing: threading.Event, seed: int, now: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            age = 0 if rng.random() < 0.6 else rng.randrange(1, 12)
            ts = now - age * HOUR_MS - rng.randrange(HOUR_MS // 2)
            user = f"u{rng.randrange(300)}" if rng.random() < 0.7 else f"n{seed}-{rng.random()}"
            kind = rng.choice(["click", "impression"])
            if rng.random() < 0.1:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"/analytics?timestamp={ts}")
                continue
            event = Event(ts, user, kind)
            with lock:
                ledger.record_sent(event)
            try:
                response = client.post(f"/analytics?timestamp={ts}&user={user}&event={kind}")
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.01)
                continue
            if response.status_code == 204:
                with lock:
                    ledger.record_acked(event)
                flowing.set()


@dataclass
class SoakReport:
    cycles: int
    acked_events: int
    lost: int
    invented: int
    problems: list[str]


def soak(data_dir: Path, cycles: int, clients: int, seed: int, kill_after: tuple[float, float],
         log_path: Path, quiet: bool = False) -> SoakReport:
    rng = random.Random(seed)
    ledger = Ledger()
    lock = threading.Lock()
    now = int(time.time() * 1000)
    lost = invented = 0
    problems: list[str] = []
    server = ShardstatsServer(data_dir, log_path, STRESS_ENV).start()
    for cycle in range(1, cycles + 1):
        stop, flowing = threading.Event(), threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(
                server.url, ledger, lock, stop, flowing, seed * 1000 + cycle * 100 + i, now))
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        # The delay counts from the first acknowledgement: on a busy machine the clients can
        # take longer than a whole delay to get going, and a cycle without load tests nothing.
        flowing.wait(FLOWING_WITHIN)
        time.sleep(rng.uniform(*kill_after))
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.start()
        result = read_back(ledger, server.url)
        cycle_lost, cycle_invented = missing(result)
        lost += cycle_lost
        invented += cycle_invented
        problems += [f"cycle {cycle}: {p}" for p in result.problems]
        if not quiet:
            print(f"cycle {cycle:3d}/{cycles}: {ledger.acknowledged:7d} acknowledged so far, "
                  f"lost {cycle_lost}, invented {cycle_invented}", flush=True)
    server.kill()
    return SoakReport(cycles, ledger.acknowledged, lost, invented, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-kill", type=float, default=0.3, help="seconds (default 0.3)")
    parser.add_argument("--max-kill", type=float, default=2.5, help="seconds (default 2.5)")
    parser.add_argument("--data-dir", help="default: a new temporary directory")
    args = parser.parse_args()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="shardstats-soak-"))
    log_path = data_dir.parent / f"{data_dir.name}.server.log"
    print(f"soak: data dir {data_dir}, server log {log_path}", flush=True)
    started = time.monotonic()
    report = soak(data_dir, args.cycles, args.clients, args.seed,
                  (args.min_kill, args.max_kill), log_path)
    for problem in report.problems[:20]:
        print("PROBLEM:", problem)
    print(f"soak: {report.cycles} cycles, {report.acked_events} acknowledged events, "
          f"{report.lost} lost, {report.invented} counted but never sent, "
          f"{time.monotonic() - started:.0f} s")
    return 0 if report.lost == 0 and report.invented == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

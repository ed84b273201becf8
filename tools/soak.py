"""Crash soak: SIGKILL a loaded server at random moments, restart it, check nothing is lost.

    python tools/soak.py [--cycles 50] [--clients 16] [--data-dir DIR] [--seed N]

Each cycle starts ``shardstats serve`` on the same data directory with small bounds (so
snapshots, evictions and reloads happen all the time and kills land in the middle of them),
runs concurrent clients posting to the current and past hours with new and repeated users
(and reading hours back), kills the server with SIGKILL after a random delay, restarts it,
and checks every hour: acknowledged ⊆ counted ⊆ sent, for clicks, impressions and unique
users. Prints a line per cycle and a summary; exits 1 if any acknowledged event was lost or
anything was counted that was never sent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HOUR = 3_600_000
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
STRESS_ENV = {
    "SHARDSTATS_MAX_OPEN_SHARDS": "3",
    "SHARDSTATS_MAX_CACHED_HOURS": "2",
    "SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": "0.2",
    "SHARDSTATS_SHARD_IDLE_SECONDS": "0.3",
    "SHARDSTATS_PRELOAD_HOURS": "1",
    "SHARDSTATS_USER_CACHE_SIZE": "50",
    "SHARDSTATS_LOG_LEVEL": "warning",
}


@dataclass
class HourLedger:
    sent_clicks: int = 0
    sent_impressions: int = 0
    acked_clicks: int = 0
    acked_impressions: int = 0
    sent_users: set[str] = field(default_factory=set)
    acked_users: set[str] = field(default_factory=set)


class Ledger:
    """What clients sent and what the server acknowledged, per hour (thread-safe)."""

    def __init__(self) -> None:
        self.hours: defaultdict[int, HourLedger] = defaultdict(HourLedger)
        self._lock = threading.Lock()

    def sent(self, hour: int, user: str, kind: str) -> None:
        with self._lock:
            h = self.hours[hour]
            h.sent_users.add(user)
            if kind == "click":
                h.sent_clicks += 1
            else:
                h.sent_impressions += 1

    def acked(self, hour: int, user: str, kind: str) -> None:
        with self._lock:
            h = self.hours[hour]
            h.acked_users.add(user)
            if kind == "click":
                h.acked_clicks += 1
            else:
                h.acked_impressions += 1

    def acked_events(self) -> int:
        return sum(h.acked_clicks + h.acked_impressions for h in self.hours.values())


@dataclass
class Check:
    lost: int = 0  # acknowledged but not counted
    invented: int = 0  # counted but never sent
    problems: list[str] = field(default_factory=list)


def check(ledger: Ledger, url: str) -> Check:
    result = Check()
    with httpx.Client(base_url=url, timeout=30) as client:
        for hour, h in sorted(ledger.hours.items()):
            got = client.get(f"/analytics?timestamp={hour * HOUR}").json()
            for name, acked, counted, sent in (
                ("clicks", h.acked_clicks, got["clicks"], h.sent_clicks),
                ("impressions", h.acked_impressions, got["impressions"], h.sent_impressions),
                ("unique_users", len(h.acked_users), got["unique_users"], len(h.sent_users)),
            ):
                if counted < acked:
                    result.lost += acked - counted
                    result.problems.append(f"hour {hour}: {name} {counted} < acknowledged {acked}")
                if counted > sent:
                    result.invented += counted - sent
                    result.problems.append(f"hour {hour}: {name} {counted} > sent {sent}")
    return result


class Server:
    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardstats", "serve", "--bind", "127.0.0.1:0",
             "--data-dir", str(data_dir)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("SHARDSTATS_")},
                 **env},
        )
        self.url = ""

    def wait_ready(self, offset: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log_path}"
                )
            match = LISTENING.search(self.log_path.read_text(errors="replace")[offset:])
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                try:
                    if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"server not ready within {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()


def client_loop(url: str, ledger: Ledger, stop: threading.Event, seed: int, now: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            age = 0 if rng.random() < 0.6 else rng.randrange(1, 12)
            ts = now - age * HOUR - rng.randrange(HOUR // 2)
            hour = ts // HOUR
            user = f"u{rng.randrange(300)}" if rng.random() < 0.7 else f"n{seed}-{rng.random()}"
            kind = rng.choice(["click", "impression"])
            if rng.random() < 0.1:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"/analytics?timestamp={ts}")
                continue
            ledger.sent(hour, user, kind)
            try:
                response = client.post(f"/analytics?timestamp={ts}&user={user}&event={kind}")
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.01)
                continue
            if response.status_code == 204:
                ledger.acked(hour, user, kind)


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
    now = int(time.time() * 1000)
    lost = invented = 0
    problems: list[str] = []
    server = Server(data_dir, log_path, STRESS_ENV)
    server.wait_ready(0)
    for cycle in range(1, cycles + 1):
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop,
                             args=(server.url, ledger, stop, seed * 1000 + cycle * 100 + i, now))
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(*kill_after))
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        offset = log_path.stat().st_size
        server = Server(data_dir, log_path, STRESS_ENV)
        server.wait_ready(offset)
        result = check(ledger, server.url)
        lost += result.lost
        invented += result.invented
        problems += [f"cycle {cycle}: {p}" for p in result.problems]
        if not quiet:
            print(f"cycle {cycle:3d}/{cycles}: {ledger.acked_events():7d} acknowledged so far, "
                  f"lost {result.lost}, invented {result.invented}", flush=True)
    server.kill()
    return SoakReport(cycles, ledger.acked_events(), lost, invented, problems)


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

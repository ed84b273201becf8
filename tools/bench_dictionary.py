"""User-dictionary benchmark: what a new user name and a known one cost as the dictionary grows.

    python tools/bench_dictionary.py [--sizes 1000000,3000000,10000000] [--new 20000]
                                     [--rounds 5] [--known 20000] [--batch] [--dir DIR]

Fills a fresh ``users.sqlite`` (in a temporary directory unless ``--dir``) through
``UserStore.assign`` up to each size in turn (names ``known-<k>`` in random order), then, per
size, prints one line:

- *new name*: ``--rounds`` calls of ``assign`` with ``--new`` names never seen before (what one
  group commit of a batch with many new users asks for): the median call per new name (wall
  clock, and CPU time of this process: the figure other processes on a shared machine disturb
  least), and the slowest call;
- *index upkeep*: the time of ``UserStore.maintain`` (writing the in-memory tail of the name
  index as a run and merging runs, which the server does in a worker thread beside the
  commits), per name added since the previous size: the rest of what a new name costs;
- *known name*: ``assign`` of ``--known`` names drawn at random from the whole dictionary,
  i.e. what a name the server's cache does not hold costs (none of them is new);
- RSS of this process (anonymous and file-backed: the index runs are mapped files) and the
  size on disk of the dictionary.

With ``--batch``, then starts ``shardstats serve`` on that data directory (pinned like
``tools/bench.py`` does) and runs its batch-ingest scenario twice at the largest size: users
all known (``known-<k>``, Zipf-like over the whole dictionary) and users mostly new (a fresh
prefix, uniform over as many ranks as the dictionary holds). Progress goes to stderr. Nothing
here is a pass/fail check; the targets are issue 14's (new name <= 3 us at 10M names, batch
ingest >= 250k events/s with mostly new users and >= 500k/s with known ones).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tools`` importable (--batch)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardstats.storage.users import UserStore

FILL_CHUNK = 50_000
KNOWN_PREFIX = "known-"


def fresh_names(rng: random.Random, count: int) -> list[str]:
    return [f"user-{rng.getrandbits(48):012x}" for _ in range(count)]


def known_names(rng: random.Random, start: int, stop: int) -> list[str]:
    ranks = list(range(start, stop))
    rng.shuffle(ranks)
    return [f"{KNOWN_PREFIX}{k}" for k in ranks]


@dataclass
class Timed:
    """Wall-clock and CPU seconds (this process, all threads) of something done ``count``
    times: on a shared machine, CPU time is the figure that other processes disturb least."""

    wall: float = 0.0
    cpu: float = 0.0
    count: int = 0

    @contextmanager
    def timing(self, count: int) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.count += count

    def us(self) -> str:
        count = max(self.count, 1)
        return f"{self.wall / count * 1e6:.2f} us (CPU {self.cpu / count * 1e6:.2f} us)"


@dataclass
class Upkeep:
    """Time spent in ``maintain``, per name added meanwhile (stores without a run index have
    nothing to maintain)."""

    timed: Timed = field(default_factory=Timed)

    def after_assign(self, store: UserStore, added: int) -> None:
        self.timed.count += added
        maintain: Callable[[], None] | None = getattr(store, "maintain", None)
        if maintain is not None and store.maintenance_due():
            with self.timed.timing(0):
                maintain()


def memory() -> str:
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return (f"RSS {fields['VmRSS']:.0f} MiB (anon {fields['RssAnon']:.0f}, "
            f"file {fields['RssFile']:.0f})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_mib(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("users*") if p.is_file()) / 2**20


def run(directory: Path, sizes: list[int], new: int, rounds: int, known: int,
        seed: int) -> list[str]:
    rng = random.Random(seed)
    store = UserStore(directory / "users.sqlite")
    held = 0  # names in the dictionary
    ranks = 0  # of which known-<k>, k < ranks
    lines = []
    try:
        for size in sizes:
            upkeep = Upkeep()
            while held < size:
                chunk = known_names(rng, ranks, ranks + min(FILL_CHUNK, size - held))
                store.assign(chunk)
                upkeep.after_assign(store, len(chunk))
                held += len(chunk)
                ranks += len(chunk)
                print(f"[fill] {held:,} / {size:,} names", file=sys.stderr, flush=True)
            took: list[Timed] = []
            for _ in range(rounds):
                fresh = fresh_names(rng, new)
                took.append(Timed())
                with took[-1].timing(new):
                    ids = store.assign(fresh)
                if len(set(ids.values())) != len(set(fresh)):
                    raise SystemExit("assign returned duplicate ids")
                held += len(set(fresh))
                upkeep.after_assign(store, len(set(fresh)))
            lookup = ""
            if ranks:
                sample = list({f"{KNOWN_PREFIX}{rng.randrange(ranks)}" for _ in range(known)})
                looked_up = Timed()
                with looked_up.timing(len(sample)):
                    found = store.assign(sample)
                if max(found.values()) > held:
                    raise SystemExit("a known name got a new id")
                lookup = f"; known name (not cached) {looked_up.us()}"
            gc.collect()
            took.sort(key=lambda timed: timed.wall)
            median = took[len(took) // 2]
            lines.append(
                f"dictionary of {size:,} names: new name {median.us()} (assign of {new:,}: "
                f"median {median.wall * 1000:.0f} ms, slowest {took[-1].wall * 1000:.0f} ms) "
                f"+ index upkeep {upkeep.timed.us()}{lookup}; {memory()}; on disk "
                f"{disk_mib(directory):.0f} MiB")
            print(lines[-1], flush=True)
    finally:
        store.close()
    return lines


# -- batch ingest through a server on the filled dictionary (--batch) ---------------------------


def batch_scenarios(directory: Path, names: int, seconds: float, seed: int) -> list[str]:
    """``tools/bench.py``'s batch-ingest scenario, on a server whose dictionary holds
    ``names`` names ``known-0 ..``: users all known, then mostly new."""
    import trio

    from tools.bench import pinning
    from tools.loadgen.report import format_batch
    from tools.loadgen.runner import LoadSession
    from tools.loadgen.workload import WorkloadConfig
    from tools.spawn import ShardstatsServer

    server_cpus, pin_note = pinning(no_pin=False)
    print(f"[batch] {pin_note}", file=sys.stderr, flush=True)
    lines = []
    cases = [("users all known (Zipf-like over the dictionary)", KNOWN_PREFIX, 1.1),
             ("users mostly new (uniform over as many fresh names)", "fresh-", 0.0)]
    for label, prefix, zipf_s in cases:
        # A fresh server each time, with the dictionary and no hours: the read-back is exact.
        for folder in ("journals", "snapshots"):
            shutil.rmtree(directory / folder, ignore_errors=True)
        server = ShardstatsServer(directory, directory / f"server-{prefix.strip('-')}.log",
                                  cpus=server_cpus)
        try:
            ready = server.start(within=600).ready_seconds
            rss = server.rss_mib()
            session = LoadSession(server.url, WorkloadConfig(), seed=seed, user_prefix=prefix)
            cpu = cpu_seconds(server.pid)
            report = trio.run(functools.partial(
                session.batch_loop, 2, seconds, warmup=2.0, batch_events=10_000, pool=names,
                zipf_s=zipf_s, label=label))
            cpu = cpu_seconds(server.pid) - cpu
            new = "" if prefix == KNOWN_PREFIX else (
                f", {report.new_in_window / max(report.events_in_window, 1):.0%} of events "
                "with a user new to the server")
            lines.append(f"batch ingest at {names:,} names, {label}: "
                         f"{report.event_rate:,.0f} events/s{new}; server CPU "
                         f"{cpu / max(report.tally.accepted, 1) * 1e6:.2f} us per event "
                         f"acknowledged (whole run); server ready in {ready:.1f} s "
                         f"with {rss:.0f} MiB RSS, {server.rss_mib():.0f} MiB after\n"
                         f"{format_batch(report)}")
            print(lines[-1], flush=True)
            if report.check is not None and not report.check.ok:
                raise SystemExit(f"read-back failed: {report.check.problems[:3]}")
        finally:
            server.stop()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,3000000,10000000",
                        help="dictionary sizes to measure at, comma-separated (ascending)")
    parser.add_argument("--new", type=int, default=20_000, help="new names per timed call")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per size")
    parser.add_argument("--known", type=int, default=20_000,
                        help="known names looked up per size")
    parser.add_argument("--batch", action="store_true",
                        help="then batch ingest through a server at the largest size")
    parser.add_argument("--batch-seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where to build users.sqlite (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes comma-separated integers")
    if (sizes != sorted(sizes) or sizes[0] < 0 or args.new < 1 or args.rounds < 1
            or args.known < 1):
        parser.error("--sizes must ascend from 0 or more; --new, --rounds and --known must "
                     "be >= 1")

    def both(directory: Path) -> None:
        run(directory, sizes, args.new, args.rounds, args.known, args.seed)
        if args.batch:
            batch_scenarios(directory, sizes[-1], args.batch_seconds, args.seed)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        both(args.dir)
        return 0
    with tempfile.TemporaryDirectory(prefix="shardstats-dict-") as tmp:
        both(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

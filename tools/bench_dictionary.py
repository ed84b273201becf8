"""User-dictionary benchmark: what a new user name costs as the dictionary grows.

    python tools/bench_dictionary.py [--sizes 1000000,3000000] [--new 20000] [--rounds 5]

Fills a fresh ``users.sqlite`` (in a temporary directory unless ``--dir``) through
``UserStore.assign`` with random names up to each size in turn, then times ``--rounds`` calls
of ``assign`` with ``--new`` names never seen before (what one group commit of a batch with
many new users asks for) and prints, per size, the median and slowest call, the cost per new
name and the file size. Progress goes to stderr. Nothing here is a pass/fail check: it
measures the one storage cost that grows with the number of users ever seen (each commit's
random inserts dirty pages all over the name index).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shardstats.storage.users import UserStore

FILL_CHUNK = 50_000


def names(rng: random.Random, count: int) -> list[str]:
    return [f"user-{rng.getrandbits(48):012x}" for _ in range(count)]


def run(directory: Path, sizes: list[int], new: int, rounds: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    path = directory / "users.sqlite"
    store = UserStore(path)
    held = 0
    lines = []
    try:
        for size in sizes:
            while held < size:
                chunk = min(FILL_CHUNK, size - held)
                store.assign(names(rng, chunk))
                held += chunk
                print(f"[fill] {held:,} / {size:,} names", file=sys.stderr, flush=True)
            took = []
            for _ in range(rounds):
                fresh = names(rng, new)
                started = time.perf_counter()
                ids = store.assign(fresh)
                took.append(time.perf_counter() - started)
                if len(set(ids.values())) != len(set(fresh)):
                    raise SystemExit("assign returned duplicate ids")
                held += new
            median = statistics.median(took)
            lines.append(
                f"dictionary of {size:,} names: assign of {new:,} new names: median "
                f"{median * 1000:.0f} ms, slowest {max(took) * 1000:.0f} ms, "
                f"{median / new * 1e6:.2f} us per new name; file "
                f"{path.stat().st_size / 2**20:.0f} MiB")
            print(lines[-1], flush=True)
    finally:
        store.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,3000000",
                        help="dictionary sizes to measure at, comma-separated (ascending)")
    parser.add_argument("--new", type=int, default=20_000, help="new names per timed call")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where to build users.sqlite (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes comma-separated integers")
    if sizes != sorted(sizes) or sizes[0] < 0 or args.new < 1 or args.rounds < 1:
        parser.error("--sizes must ascend from 0 or more; --new and --rounds must be >= 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, sizes, args.new, args.rounds, args.seed)
        return 0
    with tempfile.TemporaryDirectory(prefix="shardstats-dict-") as tmp:
        run(Path(tmp), sizes, args.new, args.rounds, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

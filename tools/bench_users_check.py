"""What the start-up check of the user dictionary (``DataDir.check_users``: users.issued and the
newest journals' ids) adds to a restart: builds a data directory of ``--hours`` journals of
``--events`` events each (blocks of ``--block`` events, ``--users`` users) and times the check.

    python tools/bench_users_check.py                   # 48 h x 360k events, 100k users
    python tools/bench_users_check.py --repeat 20 --dir /tmp/ucheck   # keep and reuse the dir
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from shardstats.core.events import EventColumns
from shardstats.storage.datadir import DataDir
from shardstats.storage.issued import Mark

HOUR = 490_000


def build(datadir: DataDir, hours: int, events: int, block: int, users: int) -> None:
    datadir.prepare()
    names = [f"user-{i}" for i in range(users)]
    with datadir.open_users() as store:
        ids = store.assign(names)
        datadir.write_users_mark(Mark(store.seed, store.issued))
    uids = [ids[name] for name in names]
    for hour in range(HOUR, HOUR + hours):
        with datadir.open_journal(hour, create=True) as journal:
            for start in range(0, events, block):
                n = min(block, events - start)
                picked = [(start + i) % users for i in range(n)]
                journal.append(EventColumns([hour * 3_600_000] * n,
                                            [names[k] for k in picked], [0] * n),
                               [uids[k] for k in picked])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--events", type=int, default=360_000)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--dir", type=Path, help="data directory to build (or reuse)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="users-check-"))
    datadir = DataDir(root)
    if not datadir.users_path.exists():
        started = time.monotonic()
        build(datadir, args.hours, args.events, args.block, args.users)
        print(f"built {root} in {time.monotonic() - started:.1f} s")
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        datadir.check_users()
        times.append(time.perf_counter() - started)
    print(f"check_users over {len(datadir.journal_hours())} journals: median "
          f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"({args.repeat} runs, the first {times[0] * 1000:.1f} ms)")


if __name__ == "__main__":
    main()

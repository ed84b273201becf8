"""SIGKILL while names are assigned and the name index is written and merged beside: every id
the store handed out (what a journal block may then use) is there after a restart, under
the same name, and no two names share an id."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from shardstats.storage.users import UserStore

CHILD = """
import json, random, sys, threading, time
from pathlib import Path
from shardstats.storage.users import UserStore

store = UserStore(Path(sys.argv[1]), tail_size=64)
rng = random.Random(int(sys.argv[2]))

def upkeep():
    while True:
        if store.maintenance_due():
            store.maintain()
        else:
            time.sleep(0.0005)

threading.Thread(target=upkeep, daemon=True).start()
print("ready", flush=True)
while True:
    names = [f"u{rng.randrange(20_000)}" for _ in range(rng.randint(1, 300))]
    print(json.dumps(store.assign(names)), flush=True)  # handed out: a journal may use them
"""


def test_sigkill_never_loses_an_id_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    rng = random.Random(5)
    handed_out: dict[str, int] = {}
    for cycle in range(5):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(cycle)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        for _ in range(rng.randint(20, 150)):
            line = child.stdout.readline()
            assert line.endswith("\n"), "the child died on its own"
            for name, uid in json.loads(line).items():
                assert handed_out.setdefault(name, uid) == uid, (cycle, name)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        with UserStore(path, tail_size=64) as store:
            assert store.assign(list(handed_out)) == handed_out
            pass
        conn = sqlite3.connect(path)
        everything = {name: uid for uid, name in conn.execute("SELECT id, name FROM users")}
        conn.close()
        assert len(everything) == len(set(everything.values())), "a name has two ids"
        assert sorted(everything.values()) == list(range(1, len(everything) + 1))
    assert len(handed_out) > 1000

"""The user dictionary store: exact, stable ids through runs, merges, reopens and damage.

The model is a plain dict name -> id. Every test checks the store against it: ids are
injective (two names never share one), dense from 1, and the same after any reopen. Hash
collisions are forced by replacing the name hash with one of three values, so the
checks against the stored name carry the exactness, not the hash.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shardstats.storage import user_index
from shardstats.storage.users import UserStore


def colliding_hashes(names: Sequence[str], seed: int) -> user_index.Hashes:
    return np.array([len(name) % 3 for name in names], dtype=np.uint64)


@contextmanager
def hashes_collide() -> Iterator[None]:
    with mock.patch.object(user_index, "name_hashes", colliding_hashes):
        yield


def check(store: UserStore, model: dict[str, int]) -> None:
    assert store.assign(list(model)) == model
    assert sorted(model.values()) == list(range(1, len(model) + 1))


def run_files(store: UserStore) -> list[str]:
    return sorted(p.name for p in store.index_dir.iterdir())


# Quotes, backslashes, NUL and non-ASCII: names go to SQLite through a JSON array.
names = st.text(alphabet='ab"\\\x00é\u2028😀', min_size=1, max_size=4)


class DictionaryMachine(RuleBasedStateMachine):
    collide = False

    def __init__(self) -> None:
        super().__init__()
        self._patch = hashes_collide() if self.collide else None
        if self._patch is not None:
            self._patch.__enter__()
        self.folder = Path(__import__("tempfile").mkdtemp(prefix="users-machine-"))
        self.path = self.folder / "users.sqlite"
        self.tail = 3
        self.store = UserStore(self.path, tail_size=self.tail)
        self.model: dict[str, int] = {}

    @rule(batch=st.lists(names, max_size=12))
    def assign(self, batch: list[str]) -> None:
        ids = self.store.assign(batch)
        assert set(ids) == set(batch)
        for name in batch:
            assert self.model.setdefault(name, len(self.model) + 1) == ids[name], name

    @rule()
    def maintain(self) -> None:
        self.store.maintain()
        assert self.store.tail_length == 0

    @rule(tail=st.integers(1, 6))
    def reopen(self, tail: int) -> None:
        self.store.close()
        self.tail = tail
        self.store = UserStore(self.path, tail_size=tail)
        assert self.store.tail_length <= tail

    @precondition(lambda self: self.store.indexed > 0)
    @rule(data=st.data())
    def damage_a_run_and_reopen(self, data: st.DataObject) -> None:
        self.store.close()
        runs = sorted(self.store.index_dir.glob("*.run"))
        victim = data.draw(st.sampled_from(runs))
        raw = bytearray(victim.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] ^= 0x40
        else:
            del raw[at:]  # torn
        victim.write_bytes(bytes(raw))
        self.store = UserStore(self.path, tail_size=self.tail)

    @invariant()
    def ids_match_the_model(self) -> None:
        check(self.store, self.model)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._patch is not None:
            self._patch.__exit__(None, None, None)


class CollidingDictionaryMachine(DictionaryMachine):
    collide = True


machine_settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
TestDictionary = DictionaryMachine.TestCase
TestDictionary.settings = machine_settings
TestCollidingDictionary = CollidingDictionaryMachine.TestCase
TestCollidingDictionary.settings = machine_settings


def make_format_1(path: Path, rows: list[tuple[int, str]]) -> None:
    """A dictionary as the code before the run index wrote it (name index, no meta table)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE [users] ([id] INTEGER PRIMARY KEY, [name] TEXT NOT NULL)")
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_by_name ON users(name)")
    conn.executemany("INSERT INTO users(id, name) VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("tail", [1000, 7])  # all in the tail; mostly in runs built on open
def test_a_format_1_dictionary_opens_with_its_ids(tmp_path: Path, tail: int) -> None:
    path = tmp_path / "users.sqlite"
    rows = [(uid, f"user-{uid}") for uid in range(1, 61) if uid != 17]  # a rolled-back id
    make_format_1(path, rows)
    with UserStore(path, tail_size=tail) as store:
        assert store.assign([name for _, name in rows]) == {name: uid for uid, name in rows}
        assert store.assign(["new", "user-5"]) == {"new": 61, "user-5": 5}
    conn = sqlite3.connect(path)
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                           "AND tbl_name = 'users'").fetchall()
    assert indexes == []  # only the table's own primary key
    # The code before can open it again: its name index builds, names being unique.
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_by_name ON users(name)")
    conn.close()
    with UserStore(path, tail_size=tail) as store:
        assert store.assign(["new", "user-60", "newer"]) == {"new": 61, "user-60": 60,
                                                             "newer": 62}


def filled(path: Path, count: int, step: int = 25) -> tuple[UserStore, dict[str, int]]:
    store = UserStore(path, tail_size=10)
    model: dict[str, int] = {}
    for start in range(0, count, step):
        batch = [f"n{i}" for i in range(start, min(start + step, count))]
        model.update(store.assign(batch))
        store.maintain()
    return store, model


def test_a_crash_during_a_merge_leaves_a_chain_the_next_open_keeps(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    store, model = filled(path, 80, step=20)
    [run] = store._runs  # 1..20, 21..40, 41..60 and 61..80, merged
    seed = store._seed
    store.close()
    # What a crash before the inputs of that merge were deleted leaves, and a temporary file.
    for first in range(1, 80, 20):
        last = first + 19
        ids = list(range(first, last + 1))
        names = [run.name_at(uid).decode() for uid in ids]
        user_index.write_entries(store.index_dir, seed, first, last, user_index.Entries.build(
            ids, names, user_index.name_hashes(names, seed)))
    (store.index_dir / ".users-41-50.run.tmp").write_bytes(b"half")
    assert len(run_files(store)) == 6
    with UserStore(path, tail_size=10) as again:
        assert [(r.first, r.last) for r in again._runs] == [(1, 80)]
        assert run_files(again) == ["users-1-80.run"]
        check(again, model)


def test_runs_of_another_dictionary_are_not_used(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store_a, _ = filled(tmp_path / "a" / "users.sqlite", 40)
    store_a.close()
    store_b, model_b = filled(tmp_path / "b" / "users.sqlite", 20)
    store_b.close()
    shutil.rmtree(tmp_path / "b" / "users-index")
    shutil.copytree(tmp_path / "a" / "users-index", tmp_path / "b" / "users-index")
    with UserStore(tmp_path / "b" / "users.sqlite", tail_size=10) as store:
        check(store, model_b)
        assert all(run.last <= 20 for run in store._runs)


def test_a_restored_older_table_drops_runs_beyond_it(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    store, model = filled(path, 30)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", tmp_path / f"old{suffix}")
    store = UserStore(path, tail_size=10)
    store.assign([f"later-{i}" for i in range(30)])
    store.maintain()
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
        if (tmp_path / f"old{suffix}").exists():
            shutil.copy(tmp_path / f"old{suffix}", f"{path}{suffix}")
    with UserStore(path, tail_size=10) as again:
        assert again.indexed <= 30
        check(again, model)
        assert again.assign(["later-0"]) == {"later-0": 31}


def test_maintain_beside_assign_in_another_thread(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.sqlite", tail_size=50)
    model: dict[str, int] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def upkeep() -> None:
        try:
            while not stop.is_set():
                if store.maintenance_due():
                    store.maintain()
        except BaseException as exc:  # the assertion below shows it
            errors.append(exc)

    worker = threading.Thread(target=upkeep)
    worker.start()
    try:
        for round_no in range(200):
            batch = [f"u{(round_no * 37 + i * 11) % 3000}" for i in range(40)]
            ids = store.assign(batch)
            for name in batch:
                assert model.setdefault(name, ids[name]) == ids[name]
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert store.indexed > 0
    check(store, model)
    store.close()
    with UserStore(tmp_path / "users.sqlite", tail_size=50) as again:
        check(again, model)


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.sqlite")
    store.close()
    store.close()  # idempotent
    from shardstats.errors import StorageError

    with pytest.raises(StorageError, match="closed"):
        store.assign(["a"])


def test_integrity_problems_name_a_user_held_under_two_ids(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    with UserStore(path) as store:
        store.assign(["ann", "bob"])
        assert store.integrity_problems() == []
    conn = sqlite3.connect(path)  # nothing in the file forbids it: only the store's own rules
    conn.execute("INSERT INTO users(id, name) VALUES (3, 'ann')")
    conn.commit()
    conn.close()
    with UserStore(path, readonly=True) as store:
        assert store.integrity_problems() == ["user 'ann' has 2 ids"]


def test_maintain_in_steps_does_one_thing_at_a_time(tmp_path: Path) -> None:
    store, model = filled(tmp_path / "users.sqlite", 0)
    for start in range(0, 60, 10):  # six tails of 10 names: runs of one tier
        model.update(store.assign([f"s{i}" for i in range(start, start + 10)]))
        assert store.maintenance_due()
        store.maintain(step=True)  # writes the full tail, merges nothing yet
        assert store.tail_length == 0
    assert [(r.first, r.last) for r in store._runs] == [(1, 10), (11, 20), (21, 30), (31, 40),
                                                        (41, 50), (51, 60)]
    store.assign(["partial"])  # a tail not full: a step merges the newest four runs instead
    assert store.maintenance_due()
    store.maintain(step=True)
    assert store.tail_length == 1
    assert [(r.first, r.last) for r in store._runs] == [(1, 10), (11, 20), (21, 60)]
    assert not store.maintenance_due()
    model["partial"] = 61
    check(store, model)
    store.close()


def test_runs_of_a_history_the_table_no_longer_has_are_not_used(tmp_path: Path) -> None:
    """A backup of one but not the other: the table was restored to an older copy and went
    on giving ids (to other names), then the name index was restored from before that. The
    runs have the table's seed and lie inside its ids, but name other users: trusting them
    gives a known name a second id (counted twice) and an unknown name a taken one."""
    path, index = tmp_path / "users.sqlite", tmp_path / "users-index"

    def copy(suffixes: Sequence[str], src: str, dst: str) -> None:
        for suffix in suffixes:
            Path(f"{dst}{suffix}").unlink(missing_ok=True)
            if Path(f"{src}{suffix}").exists():
                shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")

    with UserStore(path, tail_size=10) as store:  # history 1: a-0..a-29, then a-30..a-59
        store.assign([f"a-{i}" for i in range(30)])
        store.maintain()
    copy(("", "-wal", "-shm"), str(path), str(tmp_path / "table-at-30"))
    with UserStore(path, tail_size=10) as store:
        store.assign([f"a-{i}" for i in range(30, 60)])
        store.maintain()
    shutil.copytree(index, tmp_path / "index-at-60")
    copy(("", "-wal", "-shm"), str(tmp_path / "table-at-30"), str(path))  # restore the table
    model = {f"a-{i}": i + 1 for i in range(30)}
    with UserStore(path, tail_size=10) as store:  # history 2: b-30..b-59 get ids 31..60
        for i in range(30, 60):
            model[f"b-{i}"] = i + 1
        check(store, model)
        store.maintain()
    shutil.rmtree(index)
    shutil.copytree(tmp_path / "index-at-60", index)  # restore the index from history 1
    with UserStore(path, tail_size=10) as store:
        check(store, model)
        assert store.assign(["a-45"]) == {"a-45": 61}  # a new name: a new id


def test_a_folder_inside_the_index_folder_does_not_stop_the_store_opening(
    tmp_path: Path,
) -> None:
    """Opening deletes what is not a run of the chain; a folder there (an operator's copy,
    ``lost+found`` on a mount) used to raise IsADirectoryError, so the server could not start."""
    store, model = filled(tmp_path / "users.sqlite", 30)
    store.close()
    (store.index_dir / "kept-by-hand").mkdir()
    with UserStore(tmp_path / "users.sqlite", tail_size=10) as again:
        check(again, model)
    assert (store.index_dir / "kept-by-hand").is_dir()

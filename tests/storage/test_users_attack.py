"""Adversarial checks of the user dictionary's fast paths (fenced run search, vectorised name
comparison, runs searched oldest first, names inserted through msgspec JSON).

A model dict name -> id is the truth. Hashes are forced to collide (a few values, or the top
bits only, so equal hashes straddle fence blocks of runs longer than ``FENCE``), names differ
only in trailing bytes, carry NUL, escapes, controls and non-ASCII, and upkeep runs in another
thread beside the assigns.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from shardstats.storage import user_index
from shardstats.storage.user_index import FENCE
from shardstats.storage.users import UserStore

Hasher = Callable[[Sequence[str], int], user_index.Hashes]
_real = user_index.name_hashes


def _few(names: Sequence[str], seed: int) -> user_index.Hashes:
    return _real(names, seed) % np.uint64(5)


def _top_bits(names: Sequence[str], seed: int) -> user_index.Hashes:
    # Many equal hashes at both ends of the u64 range (sign bit set and clear).
    return _real(names, seed) & np.uint64(0xC000_0000_0000_0000)


HASHERS: dict[str, Hasher] = {"real": _real, "few": _few, "top_bits": _top_bits}

PIECES = ["a", "b", "\x00", "\\", '"', "\\u0000", "\x7f", "\x85", "é", "😀", "\u2028", "\t",
          "\n", " ", "\x1f", "\ufeff", "\U0010ffff"]


def random_name(rng: random.Random, max_pieces: int) -> str:
    stem = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, max_pieces)))
    # Names equal except trailing bytes: a shared stem, a short varying suffix.
    return stem + rng.choice(["", "a", "aa", "\x00", "é", "b" * rng.randint(0, 3)])


def check(store: UserStore, model: dict[str, int]) -> None:
    names = list(model)
    assert store.assign(names) == model
    assert sorted(model.values()) == list(range(1, len(model) + 1))


@pytest.mark.parametrize("hasher", list(HASHERS))
@pytest.mark.parametrize("tail", [1, FENCE - 1, FENCE, FENCE + 1])
def test_ids_stay_exact_under_collisions_and_upkeep_beside_assign(
        tmp_path: Path, hasher: str, tail: int) -> None:
    rng = random.Random(f"{hasher}-{tail}")
    path = tmp_path / "users.sqlite"
    model: dict[str, int] = {}
    with mock.patch.object(user_index, "name_hashes", HASHERS[hasher]):
        store = UserStore(path, tail_size=tail)
        stop = threading.Event()
        errors: list[BaseException] = []

        def upkeep() -> None:
            try:
                while not stop.is_set():
                    if store.maintenance_due():
                        store.maintain(step=rng.random() < 0.5)
            except BaseException as exc:  # the assertion below shows it
                errors.append(exc)

        worker = threading.Thread(target=upkeep)
        worker.start()
        try:
            for round_no in range(60):
                known = list(model)
                batch = [random_name(rng, 4) for _ in range(rng.randint(0, 40))]
                batch += rng.sample(known, min(len(known), rng.randint(0, 30)))
                batch += batch[: rng.randint(0, 5)]  # duplicates within the batch
                rng.shuffle(batch)
                ids = store.assign(batch)
                assert set(ids) == set(batch)
                for name in batch:
                    assert model.setdefault(name, len(model) + 1) == ids[name], (round_no, name)
                if round_no % 20 == 19:
                    stop.set()
                    worker.join()
                    store.close()
                    store = UserStore(path, tail_size=tail)
                    stop.clear()
                    worker = threading.Thread(target=upkeep)
                    worker.start()
        finally:
            stop.set()
            worker.join()
        assert not errors
        check(store, model)
        store.maintain()
        assert store.tail_length == 0
        check(store, model)
        assert not store.integrity_problems()
        store.close()
        with UserStore(path, tail_size=tail) as again:
            check(again, model)


def test_maximal_and_nearly_equal_names(tmp_path: Path) -> None:
    """Long names equal but for their last byte, and an empty name, in runs and the tail."""
    stem = "x" * 4095
    names = [stem + c for c in "abcdé\x00"] + [stem, "", "a", "\x00", "a\x00"]
    model: dict[str, int] = {}
    with (mock.patch.object(user_index, "name_hashes", _few),
          UserStore(tmp_path / "users.sqlite", tail_size=2) as store):
        for name in names:
            model[name] = store.assign([name])[name]
            store.maintain()
        check(store, model)
        assert store.indexed >= len(names) - 2


def test_every_code_point_reaches_the_table_as_given(tmp_path: Path) -> None:
    """The JSON insert of new names (msgspec array through SQLite's json_each) against what
    the table then holds: every code point but surrogates between others, many alone, NUL
    included (that batch goes row by row)."""
    path = tmp_path / "users.sqlite"
    points = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000]
    alone = [c for k, c in enumerate(points) if k < 0x3000 or k % 97 == 0]
    batches = [[*alone, *(f"x{c}y" for c in points)], ["\x00", "a\x00b", "\\u0000"]]
    with UserStore(path, tail_size=10**7) as store:
        ids = [store.assign(batch) for batch in batches]
    with closing(sqlite3.connect(path)) as conn:
        stored = dict(conn.execute("SELECT id, name FROM users"))
    for batch, given in zip(batches, ids, strict=True):
        assert [stored[given[name]] for name in batch] == batch

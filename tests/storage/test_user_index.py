"""The name index's vectorised parts against plain models: the fenced search against
``np.searchsorted``, ``Run.find`` against a dict, ``name_hashes`` against xxh3 name by name."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import xxhash
from hypothesis import given

from shardstats.storage import user_index
from shardstats.storage.user_index import FENCE, Entries, Run

# Few distinct values, so runs of equal hashes cross the fence's block boundaries.
hash_values = st.integers(0, 40) | st.sampled_from([0, 2**64 - 1, 2**63]) | st.integers(
    0, 2**64 - 1)


def run_of(names: list[str], hashes: list[int]) -> Run:
    ids = list(range(1, len(names) + 1))
    entries = Entries.build(ids, names, np.array(hashes, dtype=np.uint64))
    return Run(Path("unused.run"), 1, len(names), entries)


@given(st.lists(hash_values, min_size=1, max_size=5 * FENCE + 3),
       st.lists(hash_values, max_size=40))
def test_the_fenced_search_finds_what_searchsorted_finds(stored: list[int],
                                                         others: list[int]) -> None:
    run = run_of([f"n{k}" for k in range(len(stored))], stored)
    keys = np.sort(np.array(stored + others + [0, 2**64 - 1], dtype=np.uint64))
    assert run.search(keys).tolist() == np.searchsorted(run.entries.hashes, keys).tolist()


names = st.text(alphabet="ab\x00é😀", min_size=1, max_size=4)


@given(st.lists(names, min_size=1, max_size=60, unique=True), st.lists(names, max_size=30),
       st.integers(1, 4))
def test_find_gives_each_stored_name_its_id_and_no_other_name_an_id(
        stored: list[str], asked: list[str], spread: int) -> None:
    """Hashes from a few values only: equal hashes for names of equal and unequal lengths,
    so the stored names decide, in the vectorised comparison and the one-by-one one."""
    run = run_of(stored, [len(name.encode()) % spread for name in stored])
    model = {name: uid for uid, name in enumerate(stored, start=1)}
    wanted = list(dict.fromkeys(asked + stored[::2]))
    hashes = np.array([len(name.encode()) % spread for name in wanted], dtype=np.uint64)
    found: dict[str, int] = {}
    run.find(wanted, hashes, np.argsort(hashes, kind="stable"), found)
    assert found == {name: model[name] for name in wanted if name in model}


def test_name_hashes_are_xxh3_of_the_utf8_and_hash_a_lone_surrogate() -> None:
    seed = 12345
    plain = ["alice", "é", "😀", ""]
    assert user_index.name_hashes(plain, seed).tolist() == [
        xxhash.xxh3_64_intdigest(name.encode(), seed) for name in plain]
    odd = ["bob", "\ud800x"]  # strict UTF-8 refuses the surrogate: all go the careful way
    assert user_index.name_hashes(odd, seed).tolist() == [
        xxhash.xxh3_64_intdigest(name.encode("utf-8", "surrogatepass"), seed) for name in odd]

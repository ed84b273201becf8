"""The fenced run search at every fence boundary, exhaustively for small runs: lengths around
multiples of ``FENCE``, every key equal to, just below and just above each stored hash, runs
of equal hashes ending or starting at a block's first or last element, and hashes at both
ends of the u64 range; and ``Run.find`` for the name at every position of such runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardstats.storage.user_index import FENCE, Entries, Run

LENGTHS = [1, 2, FENCE - 1, FENCE, FENCE + 1, 2 * FENCE - 1, 2 * FENCE, 2 * FENCE + 1,
           3 * FENCE + 7]
TOP = 2**64 - 1


def layouts(length: int) -> list[list[int]]:
    """Sorted hash columns of ``length``: distinct, all equal, equal runs straddling each block
    boundary, and values at the top of the range."""
    distinct = [10 * (k + 1) for k in range(length)]
    out = [distinct, [7] * length, [TOP - length + 1 + k for k in range(length)],
           [0] * (length // 2) + [TOP] * (length - length // 2)]
    for edge in range(FENCE, length, FENCE):
        for width in (1, 2, 3):
            column = list(distinct)
            for k in range(max(0, edge - width), min(length, edge + width)):
                column[k] = distinct[edge]
            out.append(sorted(column))
    return out


def run_of(hashes: list[int]) -> Run:
    names = [f"n{k}" for k in range(len(hashes))]
    entries = Entries.build(list(range(1, len(names) + 1)), names,
                            np.array(hashes, dtype=np.uint64))
    return Run(Path("unused.run"), 1, len(names), entries)


@pytest.mark.parametrize("length", LENGTHS)
def test_the_fenced_search_at_every_boundary(length: int) -> None:
    for hashes in layouts(length):
        run = run_of(hashes)
        near = {0, 1, TOP - 1, TOP}
        for value in hashes:
            near |= {max(value - 1, 0), value, min(value + 1, TOP)}
        keys = np.array(sorted(near), dtype=np.uint64)
        assert run.search(keys).tolist() == np.searchsorted(run.entries.hashes, keys).tolist()


@pytest.mark.parametrize("length", LENGTHS)
def test_find_gives_the_name_at_every_position_its_id(length: int) -> None:
    for hashes in layouts(length):
        run = run_of(hashes)
        names = [f"n{k}" for k in range(length)]
        asked = [*names, "n", "n00", f"n{length}"]
        by_name = dict(zip(names, hashes, strict=True))
        keys = np.array([by_name.get(name, hashes[-1]) for name in asked], dtype=np.uint64)
        found: dict[str, int] = {}
        run.find(asked, keys, np.argsort(keys, kind="stable"), found)
        assert found == {name: k for k, name in enumerate(names, start=1)}

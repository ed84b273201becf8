"""The user dictionary's name index: immutable sorted runs of ``(hash of name, id)`` on disk.

``users.sqlite`` is the truth (see ``shardstats.storage.users``); this index is a cache of it
that answers "which ids may carry this name?" without a B-tree of names, whose random inserts
made each new name cost a page write that grew with the dictionary. Rules:

1. A run covers an id range ``first..last``: it holds one entry for *every* dictionary row
   with an id in that range, sorted by ``(hash, id)``. The runs in use cover ``1..indexed``
   one after the other; rows above ``indexed`` (the tail) are kept in memory by the store.
2. A hash is only a hint: a name is never taken as found until the row of a candidate id is
   read and its name compared. Two names with the same hash (a collision) each keep their
   id; both entries sit side by side in a run.
3. A run file is written whole (temporary file, fsync, rename, fsync of the directory) and
   never changed. It carries the dictionary's hash seed (a run of another dictionary is not
   used) and a CRC of its entries, checked when it is opened: a damaged run is deleted and
   its range read again from ``users.sqlite``. So an answer "no id carries this name" comes
   only from runs that were complete when written and are intact when read.
4. Runs are merged two at a time, newest first, when the older is not bigger than the newer
   (a binary counter): each entry is copied about log2(dictionary / tail) times in all, and
   a lookup searches at most that many runs. A crash during a merge leaves the inputs and
   perhaps the merged run: ``load_runs`` keeps the longest chain from id 1 and deletes the rest.

Blocking, numpy in C: call from worker threads.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xxhash

Hashes = npt.NDArray[np.uint64]
Ids = npt.NDArray[np.uint32]

_MAGIC = b"SSUIRUN1"
# magic, seed, first id, last id, entries, CRC-32 of the entries (hashes then ids), padding
_HEADER = struct.Struct("<8sQQQQI4x")
_SUFFIX = ".run"


def name_hashes(names: Sequence[str], seed: int) -> Hashes:
    """64-bit hashes of names, keyed by the dictionary's random seed (so nobody outside can
    aim many names at one hash)."""
    digest = xxhash.xxh3_64_intdigest
    return np.array([digest(name, seed) for name in names], dtype=np.uint64)


@dataclass(frozen=True, eq=False)
class Run:
    path: Path
    first: int
    last: int
    hashes: Hashes  # ascending; entries with equal hashes by ascending id
    ids: Ids

    @property
    def count(self) -> int:
        return len(self.hashes)

    def candidates(self, hashes: Hashes) -> tuple[list[int], list[int]]:
        """Which of ``hashes`` (ascending) this run holds, and the ids that may carry them:
        ``(ks, ids)``, ``ids[i]`` for ``hashes[ks[i]]``; a hash held more than once (a
        collision, rare) is listed once per id."""
        held = self.hashes
        if not len(held):
            return [], []
        low = np.searchsorted(held, hashes)  # ascending keys: numpy starts from the last hit
        last = len(held) - 1
        ks = np.flatnonzero(held[np.minimum(low, last)] == hashes)
        at = low[ks]
        ids = self.ids[at].tolist()
        ks_list = ks.tolist()
        repeated = np.flatnonzero(held[np.minimum(at + 1, last)] == hashes[ks])
        for i in repeated.tolist():
            k, j = ks_list[i], int(at[i]) + 1
            while j <= last and held[j] == hashes[k]:
                ks_list.append(k)
                ids.append(int(self.ids[j]))
                j += 1
        return ks_list, ids


def write_run(directory: Path, seed: int, first: int, last: int, hashes: Hashes,
              ids: Ids) -> Run:
    """Write a run of entries already sorted by ``(hash, id)`` and open it."""
    hashes = np.ascontiguousarray(hashes, dtype="<u8")
    ids = np.ascontiguousarray(ids, dtype="<u4")
    crc = _crc(hashes, ids)
    final = directory / f"users-{first}-{last}{_SUFFIX}"
    temp = directory / f".{final.name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(_HEADER.pack(_MAGIC, seed, first, last, len(hashes), crc))
            out.write(hashes.data)
            out.write(ids.data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    _fsync_directory(directory)
    run = open_run(final, seed)
    if run is None:
        raise OSError(f"{final}: the run just written does not read back")
    return run


def merge(directory: Path, seed: int, older: Run, newer: Run) -> Run:
    """One run covering both (``newer`` must start right after ``older``)."""
    if newer.first != older.last + 1:
        raise ValueError(f"runs {older.first}-{older.last} and {newer.first}-{newer.last} "
                         "are not adjacent")
    # Newer ids are all greater: inserted after equal hashes, (hash, id) order holds.
    at = np.searchsorted(older.hashes, newer.hashes, side="right")
    hashes = np.insert(older.hashes, at, newer.hashes)
    ids = np.insert(older.ids, at, newer.ids)
    return write_run(directory, seed, older.first, newer.last, hashes, ids)


def sort_entries(hashes: Hashes, ids: Ids) -> tuple[Hashes, Ids]:
    order = np.lexsort((ids, hashes))
    return hashes[order], ids[order]


def open_run(path: Path, seed: int) -> Run | None:
    """The run in ``path``, or None if it is damaged or belongs to another dictionary."""
    try:
        with path.open("rb") as handle:
            header = handle.read(_HEADER.size)
            if len(header) != _HEADER.size:
                return None
            magic, run_seed, first, last, count, crc = _HEADER.unpack(header)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return None
    if (magic != _MAGIC or run_seed != seed or not 1 <= first <= last
            or count > last - first + 1 or size != _HEADER.size + 12 * count):
        return None
    if count == 0:
        hashes: Hashes = np.zeros(0, dtype=np.uint64)
        ids: Ids = np.zeros(0, dtype=np.uint32)
    else:
        # Plain arrays over the mapping: a memmap's own indexing is Python code.
        hashes = np.memmap(path, dtype="<u8", mode="r", offset=_HEADER.size,
                           shape=(count,)).view(np.ndarray)
        ids = np.memmap(path, dtype="<u4", mode="r", offset=_HEADER.size + 8 * count,
                        shape=(count,)).view(np.ndarray)
    if _crc(hashes, ids) != crc:
        return None
    return Run(path, first, last, hashes, ids)


def load_runs(directory: Path, seed: int, max_id: int) -> list[Run]:
    """The chain of intact runs covering ``1..n`` for the largest ``n <= max_id`` they reach;
    every other file of the directory (temporaries, merge inputs, damaged runs) is deleted."""
    directory.mkdir(parents=True, exist_ok=True)
    by_first: dict[int, list[Run]] = {}
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(_SUFFIX) and not entry.startswith("."):
            run = open_run(directory / entry, seed)
            if run is not None and run.last <= max_id:
                by_first.setdefault(run.first, []).append(run)
    chain: list[Run] = []
    start = 1
    while start in by_first:
        chain.append(max(by_first[start], key=lambda run: run.last))
        start = chain[-1].last + 1
    keep = {run.path.name for run in chain}
    for entry in os.listdir(directory):
        if entry not in keep:
            remove(directory / entry)
    return chain


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _crc(hashes: Hashes, ids: Ids) -> int:
    return zlib.crc32(ids.data, zlib.crc32(hashes.data))


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The user dictionary's name index: immutable sorted runs of ``(hash of name, id)`` on disk.

``users.sqlite`` is the truth (see ``shardstats.storage.users``); this index is a cache of it
that answers "which id carries this name?" without a B-tree of names, whose random inserts
made each new name cost a page write that grew with the dictionary. Rules:

1. A run covers an id range ``first..last``: it holds one entry for *every* dictionary row
   with an id in that range, sorted by ``(hash, id)``, and the names of those rows in id
   order. The runs in use cover ``1..indexed`` one after the other; rows above ``indexed``
   (the tail) are kept in memory by the store.
2. A hash is only a hint: a name is found only when the name stored under a candidate id
   equals it, byte for byte. Two names with the same hash (a collision) each keep their id;
   both entries sit side by side in a run.
3. A run file is written whole (temporary file, fsync, rename, fsync of the directory) and
   never changed. It carries the dictionary's hash seed (a run of another dictionary is not
   used) and a CRC of its contents, checked when it is opened: a damaged run is deleted and
   its range read again from ``users.sqlite``. So an answer "no id carries this name" comes
   only from runs that were complete when written and are intact when read.
4. Runs are merged four at a time, the newest ones, once they are of one size tier (see
   ``to_merge``): each entry is copied about log4(dictionary / tail) times in all, and a
   lookup searches at most three runs per tier. A crash during a merge leaves the inputs and
   perhaps the merged run: ``load_runs`` keeps the longest chain from id 1 and deletes the rest.

Lookups are vectorised over a batch of names: the hashes of all of them are searched in a run
at once through its *fence* (every ``FENCE``-th hash, copied into memory when the run is
opened: half a byte per entry) and then a binary search in one block of the mapped hashes,
step by step for all keys together; hits are checked against the stored names with numpy in
one pass. Runs are searched oldest (largest) first, and a name found is not looked for in the
runs after it.

File layout (little-endian): a header (magic, seed, first, last, entries, bytes of names,
CRC-32 of all that follows), then ``hashes`` (u64, ascending), ``ids`` (u32, the id of each
hash), ``name_ids`` (u32, ascending), ``offsets`` (u64, entries + 1: the name of
``name_ids[i]`` is ``names[offsets[i]:offsets[i + 1]]``), then the names, UTF-8.

Blocking, numpy in C: call from worker threads.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

Hashes = npt.NDArray[np.uint64]
Ids = npt.NDArray[np.uint32]
Offsets = npt.NDArray[np.uint64]

_MAGIC = b"SSUIRUN2"
# magic, seed, first id, last id, entries, bytes of names, CRC-32 of the rest, padding
_HEADER = struct.Struct("<8sQQQQQI4x")
_SUFFIX = ".run"
FANOUT = 4
FENCE = 16  # hashes per block of a run's in-memory fence (a power of two; see Run.search)


def name_hashes(names: Sequence[str], seed: int) -> Hashes:
    """64-bit hashes of names, keyed by the dictionary's random seed (so nobody outside can
    aim many names at one hash)."""
    # UTF-8 bytes (xxhash 4 refuses str; 3.x hashed a str as its UTF-8, so ids stay the same).
    # C loops (map) for the usual names; a lone surrogate (which validation should keep out)
    # fails strict UTF-8, and then every name is encoded with surrogatepass, which hashes it
    # instead of raising.
    digest = xxhash.xxh3_64_intdigest
    try:
        hashes = map(digest, map(str.encode, names), itertools.repeat(seed))
        return np.fromiter(hashes, dtype=np.uint64, count=len(names))
    except UnicodeEncodeError:
        return np.array([digest(name.encode("utf-8", "surrogatepass"), seed)
                         for name in names], dtype=np.uint64)


@dataclass(frozen=True)
class Entries:
    """What a run holds, built in memory or mapped from its file: see the file layout."""

    hashes: Hashes
    ids: Ids
    name_ids: Ids
    offsets: Offsets
    names: Any  # bytes-like: bytes, or a memoryview of the file's mapping

    @classmethod
    def build(cls, ids: Sequence[int], names: Sequence[str], hashes: Hashes) -> Entries:
        """From rows in id order and the hashes of their names."""
        blob = "".join(names).encode()
        lengths = list(map(len, names))  # characters: bytes too if every name is ASCII
        if len(blob) != sum(lengths):
            lengths = [len(name.encode()) for name in names]
        offsets = np.zeros(len(names) + 1, dtype=np.uint64)
        offsets[1:] = np.cumsum(lengths)
        name_ids = np.array(ids, dtype=np.uint32)
        order = np.lexsort((name_ids, hashes))
        return cls(hashes[order], name_ids[order], name_ids, offsets, blob)

    def parts(self) -> list[Any]:
        """The file's contents after the header."""
        return [self.hashes.data, self.ids.data, self.name_ids.data, self.offsets.data,
                self.names]


class Run:
    def __init__(self, path: Path, first: int, last: int, entries: Entries) -> None:
        self.path = path
        self.first = first
        self.last = last
        self.entries = entries
        self._dense = len(entries.name_ids) == last - first + 1
        # Every FENCE-th hash, in memory (half a byte per entry): a
        # search goes through it, then reads one block of FENCE hashes of the mapping, rather
        # than a binary search through the whole mapped array (a cache miss per step).
        self._fence = np.array(entries.hashes[::FENCE])

    @property
    def count(self) -> int:
        return len(self.entries.hashes)

    def name_at(self, uid: int) -> bytes:
        """The stored name of ``uid`` (in this run's range), UTF-8."""
        e = self.entries
        at = uid - self.first if self._dense else int(np.searchsorted(e.name_ids, uid))
        if at >= len(e.name_ids) or int(e.name_ids[at]) != uid:
            raise KeyError(uid)
        return bytes(e.names[int(e.offsets[at]):int(e.offsets[at + 1])])

    def find(self, names: Sequence[str], hashes: Hashes, order: npt.NDArray[np.intp],
             found: dict[str, int]) -> npt.NDArray[np.intp]:
        """Add to ``found`` the id of each of ``names[order[i]]`` this run holds, and return
        those ``i`` found at the first entry of their hash (the usual case; a name found
        further along, past a colliding one, is not among them). ``hashes[order]`` must be
        ascending."""
        e = self.entries
        keys = hashes[order]
        low = self.search(keys)
        top = len(e.hashes) - 1
        hits = np.flatnonzero(e.hashes[np.minimum(low, top)] == keys)
        if not len(hits):
            return hits
        at = low[hits]
        uids = e.ids[at].astype(np.int64)
        where = uids - self.first if self._dense else np.searchsorted(e.name_ids, uids)
        starts = e.offsets[where].astype(np.int64)
        lengths = e.offsets[where + 1].astype(np.int64) - starts
        wanted = list(map(names.__getitem__, order[hits].tolist()))
        raw = list(map(str.encode, wanted))
        # Rule 2, for all hits at once: the stored name decides, compared byte for byte with
        # numpy (each hit's stored bytes gathered beside its name's bytes).
        same = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)) == lengths
        if same.all() and lengths.min() > 0:
            total = int(lengths.sum())
            ends = np.cumsum(lengths)
            gather = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths),
                                                                 lengths)
            stored = np.frombuffer(e.names, dtype=np.uint8)[gather]
            given = np.frombuffer(b"".join(raw), dtype=np.uint8)
            differ = np.add.reduceat(stored != given, ends - lengths)
            same = differ == 0
        else:  # a length differs (or a name is empty): those hits compared one by one
            stored_names = e.names
            same = np.fromiter(
                (ok and stored_names[start:start + length] == name for ok, start, length, name
                 in zip(same.tolist(), starts.tolist(), lengths.tolist(), raw, strict=True)),
                dtype=bool, count=len(raw))
        found.update(zip(itertools.compress(wanted, same), uids[same].tolist(), strict=True))
        if not same.all():  # the first id of such a hash carries another name: the others
            for i in np.flatnonzero(~same).tolist():
                self._find_colliding(wanted[i], raw[i], int(keys[hits[i]]), int(at[i]) + 1,
                                     found)
        settled: npt.NDArray[np.intp] = hits[same]
        return settled

    def search(self, keys: Hashes) -> npt.NDArray[np.int64]:
        """``np.searchsorted(hashes, keys)`` (the first position whose hash is not below the
        key), through the fence: with ``fence[i - 1] < key <= fence[i]`` that position is
        ``(i - 1) * FENCE + 1`` plus how many of the ``FENCE - 1`` hashes from there are below
        the key (``i = 0``: it is 0), counted by a binary search done for all keys at once, a
        step at a time: one read of the mapped hashes per key and step. A read past the end
        reads the last hash, and the result is capped at the end."""
        hashes = self.entries.hashes
        count = len(hashes)
        block = np.searchsorted(self._fence, keys).astype(np.int64)
        at = np.maximum(block - 1, 0) * FENCE + 1
        step = FENCE // 2
        while step:
            probe = np.minimum(at + (step - 1), count - 1)
            at += (hashes[probe] < keys) * step
            step //= 2
        at[block == 0] = 0
        result: npt.NDArray[np.int64] = np.minimum(at, count)
        return result

    def _find_colliding(self, name: str, raw: bytes, key: int, at: int,
                        found: dict[str, int]) -> None:
        e = self.entries
        while at < len(e.hashes) and int(e.hashes[at]) == key:
            uid = int(e.ids[at])
            if self.name_at(uid) == raw:
                found[name] = uid
                return
            at += 1


def write_run(directory: Path, seed: int, first: int, last: int, parts: Iterable[Any],
              count: int, names_size: int) -> Run:
    """Write a run (``parts``: its contents after the header, in file order) and open it."""
    final = directory / f"users-{first}-{last}{_SUFFIX}"
    temp = directory / f".{final.name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(_HEADER.pack(_MAGIC, seed, first, last, count, names_size, 0))
            crc = 0
            for part in parts:
                out.write(part)
                crc = zlib.crc32(part, crc)
            out.seek(0)
            out.write(_HEADER.pack(_MAGIC, seed, first, last, count, names_size, crc))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    _fsync_directory(directory)
    run = open_run(final, seed, verify=False)  # its CRC was just computed from these bytes
    if run is None:
        raise OSError(f"{final}: the run just written does not read back")
    return run


def write_entries(directory: Path, seed: int, first: int, last: int, entries: Entries) -> Run:
    return write_run(directory, seed, first, last, entries.parts(), len(entries.hashes),
                     len(entries.names))


def merge(directory: Path, seed: int, runs: Sequence[Run]) -> Run:
    """One run covering ``runs`` (each starting right after the one before)."""
    for older, newer in itertools.pairwise(runs):
        if newer.first != older.last + 1:
            raise ValueError(f"runs {older.first}-{older.last} and {newer.first}-{newer.last} "
                             "are not adjacent")
    entries = [run.entries for run in runs]
    hashes = np.concatenate([e.hashes for e in entries])
    # Stable (a timsort, which merges the sorted runs it finds): among equal hashes the ids
    # stay in run order, which is id order.
    order = np.argsort(hashes, kind="stable")
    ids = np.concatenate([e.ids for e in entries])[order]
    offsets: list[Any] = []
    shift = 0
    for e in entries:
        offsets.append((e.offsets[:-1] + np.uint64(shift)).data)
        shift += int(e.offsets[-1])
    offsets.append(np.array([shift], dtype=np.uint64).data)
    parts = [hashes[order].data, ids.data, *(e.name_ids.data for e in entries), *offsets,
             *(e.names for e in entries)]
    return write_run(directory, seed, runs[0].first, runs[-1].last, parts,
                     sum(run.count for run in runs), shift)


def to_merge(runs: Sequence[Run], unit: int) -> int:
    """How many of the newest runs to merge now (0: none), size-tiered: run sizes fall into
    tiers of powers of ``FANOUT`` (in units of ``unit`` entries, the tail size); the newest
    ``FANOUT`` runs merge once they are all of the newest run's tier or below. Each entry
    is then copied about log4(dictionary / unit) times, and a lookup searches at most
    ``FANOUT - 1`` runs per tier."""
    if len(runs) < FANOUT:
        return 0
    tier = _tier(runs[-1].count, unit)
    newest = runs[-FANOUT:]
    return FANOUT if all(_tier(run.count, unit) <= tier for run in newest) else 0


def _tier(count: int, unit: int) -> int:
    tier, size = 0, max(unit, 1) * FANOUT
    while count >= size:
        tier, size = tier + 1, size * FANOUT
    return tier


def open_run(path: Path, seed: int, *, verify: bool = True) -> Run | None:
    """The run in ``path``, or None if it is damaged or belongs to another dictionary."""
    try:
        with path.open("rb") as handle:
            header = handle.read(_HEADER.size)
            if len(header) != _HEADER.size:
                return None
            magic, run_seed, first, last, count, names_size, crc = _HEADER.unpack(header)
            size = os.fstat(handle.fileno()).st_size
            if (magic != _MAGIC or run_seed != seed or not 1 <= first <= last
                    or not 1 <= count <= last - first + 1
                    or size != _HEADER.size + 24 * count + 8 + names_size):
                return None
            if verify and _crc_of_rest(handle) != crc:
                return None
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError:
        return None
    at = _HEADER.size

    def array(dtype: str, length: int) -> Any:
        nonlocal at
        values = np.frombuffer(mapping, dtype=dtype, count=length, offset=at)
        at += values.nbytes
        return values

    # The arrays keep the mapping open for as long as they live (the collector unmaps it).
    hashes, ids, name_ids = array("<u8", count), array("<u4", count), array("<u4", count)
    offsets = array("<u8", count + 1)
    if int(offsets[-1]) != names_size:
        return None
    return Run(path, first, last, Entries(hashes, ids, name_ids, offsets,
                                          memoryview(mapping)[at:]))


def load_runs(directory: Path, seed: int, max_id: int) -> list[Run]:
    """The chain of intact runs covering ``1..n`` for the largest ``n <= max_id`` they reach;
    every other file of the directory (temporaries, merge inputs, damaged runs) is deleted;
    folders are left alone."""
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
    for found in os.scandir(directory):
        # Not a folder (an operator's copy, lost+found): unlinking one raised, and the
        # dictionary, so the server, could not open.
        if found.name not in keep and not found.is_dir(follow_symlinks=False):
            remove(directory / found.name)
    return chain


def _crc_of_rest(handle: Any) -> int:
    # Read, not through the mapping: the mapping then holds only the pages lookups touch.
    crc = 0
    while chunk := handle.read(1 << 22):
        crc = zlib.crc32(chunk, crc)
    return crc


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Snapshot codec: one hour's aggregate as bytes, with the journal position it covers.

Layout (little-endian)::

    magic     8 bytes   b"SSSNAP01"
    header    struct "<qqqqQ16sI": hour, last_seq, clicks, impressions, unique_users,
              journal_id (16 bytes), bitmap_len
    proof     format 2 only (magic b"SSSNAP02"): struct "<QQqqq", the journal file's device,
              inode, size, mtime_ns and ctime_ns when the snapshot was taken (``JournalState``)
    bitmap    bitmap_len bytes, the portable roaring serialization (``BitMap.serialize``)
    checksum  4 bytes, CRC-32 of everything before it

A snapshot is a cache of ``journal rows 1..last_seq`` of the journal whose identity is
``journal_id``: ``decode`` refuses anything whose checksum, sizes or redundant counts disagree,
and the caller refuses one whose journal id or position does not match the journal.

The proof (format 2) lets a reader trust a snapshot without opening the journal: it is written
only for a journal that was closed (no ``-wal`` file) and whose aggregate is exactly the
snapshot's, and only once the journal's ctime lies well in the past (``settled``), so that any
later change of the journal gives it another ctime (a change cannot be dated back: the kernel
sets ctime, and ``touch``/``cp -p`` can set mtime but not ctime). A reader that finds the
journal's state equal to the proof (and no ``-wal``) knows the journal holds exactly the rows
the snapshot covers; on any difference it falls back to opening the journal. Format 1 (no
proof) is still read and written (operator tools, snapshots of open journals).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pyroaring import BitMap

from shardstats.core.aggregate import HourAggregate
from shardstats.errors import CorruptFile

MAGIC = b"SSSNAP01"
MAGIC_PROVEN = b"SSSNAP02"
_HEADER = struct.Struct("<qqqqQ16sI")
_PROOF = struct.Struct("<QQqqq")
_CRC = struct.Struct("<I")
# How long a journal's ctime must lie in the past before a proof may name it: more than the
# coarsest timestamp granularity of the filesystems we run on (1-2 s), and the coarse kernel
# clock's lag behind ``time.time_ns()``.
SETTLE_NS = 3_000_000_000


@dataclass(frozen=True, slots=True)
class JournalState:
    """What ``stat`` says about a closed journal file: enough to tell that it was not touched."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def settled(self, now_ns: int) -> bool:
        """True when any change after the stat would give the file another ctime, so this
        state may be recorded as a proof. ``now_ns`` is the wall clock read *before* the stat:
        a change after the stat is stamped no earlier than that, less the clock's coarseness."""
        return self.ctime_ns < now_ns - SETTLE_NS


@dataclass(frozen=True, slots=True)
class Snapshot:
    aggregate: HourAggregate
    journal_id: bytes
    proof: JournalState | None = None


def encode(aggregate: HourAggregate, journal_id: bytes, proof: JournalState | None = None
           ) -> bytes:
    """Format 1, or format 2 with ``proof`` (the caller vouches that the journal in that state
    holds exactly rows 1..``aggregate.last_seq``)."""
    if len(journal_id) != 16:
        raise ValueError("journal_id must be 16 bytes")
    bitmap = aggregate.users.serialize()
    body = b"".join(
        (
            MAGIC if proof is None else MAGIC_PROVEN,
            _HEADER.pack(
                aggregate.hour,
                aggregate.last_seq,
                aggregate.clicks,
                aggregate.impressions,
                len(aggregate.users),
                journal_id,
                len(bitmap),
            ),
            b"" if proof is None else _PROOF.pack(proof.device, proof.inode, proof.size,
                                                   proof.mtime_ns, proof.ctime_ns),
            bitmap,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> Snapshot:
    """Parse a snapshot, raising ``CorruptFile`` with the reason if it is not intact."""
    minimum = len(MAGIC) + _HEADER.size + _CRC.size
    if len(data) < minimum:
        raise CorruptFile(f"snapshot truncated ({len(data)} bytes)")
    magic = data[: len(MAGIC)]
    if magic not in (MAGIC, MAGIC_PROVEN):
        raise CorruptFile("not a shardstats snapshot (bad magic)")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise CorruptFile("snapshot checksum mismatch")
    hour, last_seq, clicks, impressions, unique, journal_id, bitmap_len = _HEADER.unpack_from(
        body, len(MAGIC)
    )
    start = len(MAGIC) + _HEADER.size
    proof = None
    if magic == MAGIC_PROVEN:
        if start + _PROOF.size > len(body):
            raise CorruptFile("snapshot truncated in its proof")
        proof = JournalState(*_PROOF.unpack_from(body, start))
        start += _PROOF.size
    if start + bitmap_len != len(body):
        raise CorruptFile("snapshot bitmap length disagrees with file size")
    try:
        users = BitMap.deserialize(body[start:])
    except Exception as exc:  # pyroaring raises ValueError or others on bad input
        raise CorruptFile(f"snapshot bitmap does not deserialize: {exc}") from None
    if len(users) != unique or min(clicks, impressions, last_seq) < 0:
        raise CorruptFile("snapshot counters are inconsistent")
    if clicks + impressions < unique or (unique == 0) != (clicks + impressions == 0):
        raise CorruptFile("snapshot counters are inconsistent")
    aggregate = HourAggregate(hour, clicks, impressions, users, last_seq)
    return Snapshot(aggregate, journal_id, proof)

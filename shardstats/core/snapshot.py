"""Snapshot codec: one hour's aggregate as bytes, with the journal position it covers.

Layout (little-endian)::

    magic     8 bytes   b"SSSNAP01"
    header    struct "<qqqqQ16sI": hour, last_seq, clicks, impressions, unique_users,
              journal_id (16 bytes), bitmap_len
    bitmap    bitmap_len bytes, the portable roaring serialization (``BitMap.serialize``)
    checksum  4 bytes, CRC-32 of everything before it

A snapshot is a cache of ``journal rows 1..last_seq`` of the journal whose identity is
``journal_id``: ``decode`` refuses anything whose checksum, sizes or redundant counts disagree,
and the caller refuses one whose journal id or position does not match the journal.

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
_HEADER = struct.Struct("<qqqqQ16sI")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Snapshot:
    aggregate: HourAggregate
    journal_id: bytes


def encode(aggregate: HourAggregate, journal_id: bytes) -> bytes:
    if len(journal_id) != 16:
        raise ValueError("journal_id must be 16 bytes")
    bitmap = aggregate.users.serialize()
    body = b"".join(
        (
            MAGIC,
            _HEADER.pack(
                aggregate.hour,
                aggregate.last_seq,
                aggregate.clicks,
                aggregate.impressions,
                len(aggregate.users),
                journal_id,
                len(bitmap),
            ),
            bitmap,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> Snapshot:
    """Parse a snapshot, raising ``CorruptFile`` with the reason if it is not intact."""
    minimum = len(MAGIC) + _HEADER.size + _CRC.size
    if len(data) < minimum:
        raise CorruptFile(f"snapshot truncated ({len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptFile("not a shardstats snapshot (bad magic)")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise CorruptFile("snapshot checksum mismatch")
    hour, last_seq, clicks, impressions, unique, journal_id, bitmap_len = _HEADER.unpack_from(
        body, len(MAGIC)
    )
    start = len(MAGIC) + _HEADER.size
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
    return Snapshot(aggregate, journal_id)

"""A journal block in memory and on disk: consecutive events as columns, and the
little-endian packing of its integer columns (both journal formats read into it)."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import NamedTuple

_SWAP = sys.byteorder == "big"  # blocks are little-endian on disk
assert array("I").itemsize == 4 and array("q").itemsize == 8


class Block(NamedTuple):
    """Consecutive journal events ``first_seq, first_seq + 1, ...`` as columns; ``users`` and
    ``ids`` only when asked for (``users`` is None once compaction has dropped the strings)."""

    first_seq: int
    uids: list[int]
    kinds: list[int]
    timestamps: list[int] | None = None
    users: list[str] | None = None
    ids: list[str | None] | None = None

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.uids) - 1


def pack(code: str, values: Sequence[int]) -> bytes:
    """``values`` as a little-endian array of ``code`` ("q": int64, "I": uint32); raises
    ``OverflowError`` for a value the type cannot hold."""
    packed = array(code, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def unpack(code: str, data: bytes) -> list[int]:
    values = array(code)
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values.tolist()

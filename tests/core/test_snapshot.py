"""Snapshot codec: round trip, and every kind of damage is refused, never trusted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate
from shardstats.errors import CorruptFile

uids = st.lists(st.integers(1, 2**32 - 1), max_size=500)


def make(hour: int, ids: list[int], clicks: int) -> HourAggregate:
    """A consistent aggregate: every user has at least one event."""
    users = BitMap(ids)
    if not users:
        return HourAggregate(hour)
    impressions = max(len(users) - clicks, 0)
    return HourAggregate(hour, clicks, impressions, users, last_seq=clicks + impressions)


@given(
    st.integers(-(2**40), 2**40), uids, st.integers(0, 1000), st.binary(min_size=16, max_size=16)
)
def test_round_trip(hour: int, ids: list[int], clicks: int, journal_id: bytes) -> None:
    aggregate = make(hour, ids, clicks)
    snap = codec.decode(codec.encode(aggregate, journal_id))
    assert snap.aggregate == aggregate
    assert snap.journal_id == journal_id


@given(uids.filter(bool), st.data())
def test_any_truncation_or_bit_flip_is_detected(ids: list[int], data: st.DataObject) -> None:
    encoded = codec.encode(make(5, ids, 3), b"x" * 16)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CorruptFile):
        codec.decode(encoded[:cut])
    position = data.draw(st.integers(0, len(encoded) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(encoded)
    flipped[position] ^= 1 << bit
    with pytest.raises(CorruptFile):
        codec.decode(bytes(flipped))


@given(st.binary(max_size=200))
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(CorruptFile):
        codec.decode(blob)


def test_journal_id_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        codec.encode(HourAggregate(1), b"short")


proofs = st.builds(codec.JournalState, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                   st.integers(0, 2**62), st.integers(-(2**62), 2**62),
                   st.integers(-(2**62), 2**62))


@given(uids, st.integers(0, 1000), proofs)
def test_round_trip_with_a_proof(ids: list[int], clicks: int, proof: codec.JournalState) -> None:
    aggregate = make(7, ids, clicks)
    snap = codec.decode(codec.encode(aggregate, b"j" * 16, proof))
    assert (snap.aggregate, snap.journal_id, snap.proof) == (aggregate, b"j" * 16, proof)
    assert codec.decode(codec.encode(aggregate, b"j" * 16)).proof is None  # format 1


@given(uids.filter(bool), proofs, st.data())
def test_a_damaged_proven_snapshot_is_detected(ids: list[int], proof: codec.JournalState,
                                               data: st.DataObject) -> None:
    encoded = codec.encode(make(5, ids, 3), b"x" * 16, proof)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CorruptFile):
        codec.decode(encoded[:cut])
    position = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CorruptFile):
        codec.decode(bytes(flipped))


def test_a_state_is_settled_only_once_its_ctime_is_old_enough() -> None:
    state = codec.JournalState(1, 2, 3, 10, 10)
    assert not state.settled(10)
    assert not state.settled(10 + codec.SETTLE_NS)
    assert state.settled(11 + codec.SETTLE_NS)

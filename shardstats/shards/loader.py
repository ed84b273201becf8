"""Rebuild an hour's aggregate from disk: snapshot (if trustworthy) plus the journal tail.

Blocking: runs in a worker thread. A snapshot is trusted only if it decodes (checksum,
sizes, counts), names this journal's identity and covers no more than the journal holds;
anything else is logged and the hour is rebuilt from the journal alone.

``proven`` is the cheap way in (no SQLite): a format-2 snapshot whose proof equals the
journal file's state as it is now (``core.snapshot``) covers exactly the journal's rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate
from shardstats.errors import CorruptFile
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    aggregate: HourAggregate
    replayed: int
    snapshot_used: bool


def snapshot_base(datadir: DataDir, hour: int, journal: Journal) -> HourAggregate | None:
    data = datadir.read_snapshot(hour)
    if data is None:
        return None
    try:
        snap = codec.decode(data)
    except CorruptFile as exc:
        log.warning("hour %d: ignoring snapshot %s: %s", hour, datadir.snapshot_path(hour), exc)
        return None
    problem = None
    if snap.aggregate.hour != hour:
        problem = f"it is for hour {snap.aggregate.hour}"
    elif snap.journal_id != journal.journal_id:
        problem = "it belongs to a different journal"
    elif snap.aggregate.last_seq > journal.max_seq():
        problem = "it covers rows the journal does not hold"
    if problem:
        log.warning("hour %d: ignoring stale snapshot (%s); rebuilding", hour, problem)
        return None
    return snap.aggregate


def proven(datadir: DataDir, hour: int) -> HourAggregate | None:
    """The hour's aggregate from its snapshot alone when the snapshot's proof matches the
    journal file as it is now; None when there is no such proof (then open the journal)."""
    data = datadir.read_snapshot(hour)
    if data is None:
        return None
    try:
        snap = codec.decode(data)
    except CorruptFile:
        return None  # the full load says why
    if snap.proof is None or snap.aggregate.hour != hour:
        return None
    if datadir.journal_state(hour) != snap.proof:
        return None
    return snap.aggregate


def load(
    datadir: DataDir, hour: int, journal: Journal, base: HourAggregate | None
) -> LoadResult:
    """``base`` is an aggregate already in memory (trusted); otherwise read the snapshot."""
    snapshot_used = False
    if base is None:
        base = snapshot_base(datadir, hour, journal)
        snapshot_used = base is not None
        if base is None:
            base = HourAggregate(hour)
    replayed = replay(base, journal)
    return LoadResult(base, replayed, snapshot_used)


def replay(aggregate: HourAggregate, journal: Journal) -> int:
    """Fold the journal's events after ``aggregate.last_seq`` in; return how many."""
    return sum(aggregate.apply_block(block.first_seq, block.uids, block.kinds)
               for block in journal.blocks_after(aggregate.last_seq))


def write_snapshot(datadir: DataDir, aggregate: HourAggregate, journal_id: bytes) -> None:
    datadir.write_snapshot(aggregate.hour, codec.encode(aggregate, journal_id))

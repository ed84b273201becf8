"""Format 1 of the journal: one row per event in table ``events`` (what shardstats wrote
before blocks), its reader and its upgrader.

Nothing writes format 1 any more. Read-only opens and loads of past hours read it as it is
(``read_blocks``); the first open for writing rewrites it in place as blocks (``upgrade``),
seqs kept, so every snapshot position stays valid. Seqs of format 1 need not be consecutive:
each run of consecutive seqs becomes blocks of at most ``_BLOCK`` events.

Blocking: called by ``Journal`` from its worker thread, on its connection.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from shardstats.core.events import EventColumns
from shardstats.errors import CorruptFile
from shardstats.storage.block import Block, pack

log = logging.getLogger(__name__)

TABLE = "events"
_BLOCK = 10_000  # events per block when reading or upgrading
Row = tuple[Any, ...]  # a format-1 row: (seq, ts, user, uid, kind, eid)


class BlockWriter(Protocol):
    """How the upgrader writes a block: ``Journal._insert_block``, inside its transaction."""

    def __call__(self, last_seq: int, events: EventColumns, uids: Sequence[int], *,
                 keep_users: bool) -> None: ...


def is_format_1(tables: set[str]) -> bool:
    return "blocks" not in tables and TABLE in tables


def read_blocks(conn: sqlite3.Connection, path: Path, seq: int, full: bool) -> Iterator[Block]:
    """The events after ``seq`` as blocks; ``full`` adds timestamps, users and ids (users
    None where the old compactor blanked every one of them)."""
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
    eid = "eid" if "eid" in columns else "NULL"
    rows = conn.execute(
        f"SELECT seq, ts, user, uid, kind, {eid} FROM {TABLE} WHERE seq > ? ORDER BY seq",
        (seq,))
    for run in _consecutive_runs(rows, _BLOCK):
        block = Block(run[0][0], [r[3] for r in run], [r[4] for r in run])
        try:  # what the blocks' arrays would refuse, refused here too
            pack("I", block.uids)
            bytes(block.kinds)
            if full:
                pack("q", [r[1] for r in run])
        except (ValueError, TypeError, OverflowError) as exc:
            raise CorruptFile(f"{path}: format-1 rows {run[0][0]}..{run[-1][0]} are "
                              f"damaged and cannot be upgraded or read: {exc}") from exc
        if full:
            users = [r[2] for r in run]
            block = block._replace(timestamps=[r[1] for r in run],
                                   users=users if any(users) else None,
                                   ids=[r[5] for r in run])
        yield block


def max_seq(conn: sqlite3.Connection) -> int:
    (last,) = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {TABLE}").fetchone()
    return int(last)


def upgrade(conn: sqlite3.Connection, path: Path, write: BlockWriter) -> None:
    """Rewrite the one-row-per-event table as blocks of consecutive seqs (seqs kept) and drop
    it, inside the caller's write transaction."""
    started = time.monotonic()
    upgraded = 0
    for block in read_blocks(conn, path, 0, full=True):
        count = len(block.uids)
        upgraded += count
        ids = block.ids or []
        events = EventColumns(block.timestamps or [], block.users or [""] * count,
                              block.kinds, None if ids.count(None) == len(ids) else ids)
        try:
            write(block.last_seq, events, block.uids, keep_users=block.users is not None)
        except (ValueError, TypeError) as exc:
            raise CorruptFile(f"{path}: format-1 rows {block.first_seq}.."
                              f"{block.last_seq} cannot be upgraded: {exc}") from exc
    conn.execute(f"DROP TABLE {TABLE}")
    log.info("%s: upgraded to journal format 2 (%d events) in %.2f s", path, upgraded,
             time.monotonic() - started)


def _consecutive_runs(rows: Iterable[Row], limit: int) -> Iterator[list[Row]]:
    """Group ``(seq, ...)`` rows (ordered by seq) into runs of consecutive seqs."""
    run: list[Row] = []
    for row in rows:
        if run and (row[0] != run[-1][0] + 1 or len(run) >= limit):
            yield run
            run = []
        run.append(row)
    if run:
        yield run

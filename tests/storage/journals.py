"""Journals for the storage tests: events as columns, and a journal in format 1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shardstats.core.events import EventColumns

HOUR = 493_000
T0 = HOUR * 3_600_000


def columns(batch: list[tuple[int, str, int, str | None]]) -> EventColumns:
    ids = [e[3] for e in batch]
    return EventColumns([T0 + e[0] for e in batch], [e[1] for e in batch],
                        [e[2] for e in batch], None if ids.count(None) == len(ids) else ids)


UIDS = {"ann": 1, "bob": 2, "cy": 3, "dé": 4}


def make_format_1(path: Path, rows: list[tuple[int, int, str, int, int, str | None]],
                  *, with_eid: bool = True) -> None:
    """A journal as shardstats wrote it before blocks: one row per event."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # as the earlier build opened every journal
    eid = ", eid TEXT" if with_eid else ""
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
                 f"user TEXT NOT NULL, uid INTEGER NOT NULL, kind INTEGER NOT NULL{eid})")
    if with_eid:
        conn.execute("CREATE UNIQUE INDEX events_by_eid ON events(eid) WHERE eid IS NOT NULL")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    else:
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [r[:5] for r in rows])
    conn.execute("CREATE TABLE meta ([key] TEXT PRIMARY KEY, [value] TEXT)")
    conn.execute("INSERT INTO meta VALUES ('journal_id', ?), ('schema_version', '1')",
                 ("ab12" * 8,))
    conn.commit()
    conn.close()


OLD_ROWS = [(1, T0 + 5, "ann", 1, 1, None), (2, T0 + 6, "bob", 2, 2, "k1"),
            (3, T0 + 7, "", 1, 2, None),  # a row compacted by the old tool
            (7, T0 + 9, "cy", 3, 1, None)]  # seqs need not be consecutive

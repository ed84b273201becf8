"""The journal of one hour: an append-only SQLite table of committed events.

Each row holds the user *string* and the dense id the dictionary gave it. The string makes
the journal self-sufficient (the dictionary can be rebuilt from journals alone); the id makes
replay cheap and is safe to trust because the dictionary commits an id before any journal row
that uses it (see ``shardstats.storage.users``).

``seq`` (the rowid) is the journal position a snapshot records. ``journal_id`` is a random
identity written when the file is created, so a snapshot of a different (recreated) journal is
recognised as stale.

Blocking: call only from a worker thread, one thread at a time per journal.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import sqlite_utils

from shardstats.core.aggregate import JournalRow
from shardstats.core.events import EventColumns
from shardstats.errors import CorruptFile
from shardstats.storage.sqlite import classify, connect, immediate

SCHEMA_VERSION = 1
InsertRow = tuple[int, str, int, int, str | None]  # (timestamp_ms, user, uid, kind, event id)


class Journal:
    """``readonly`` opens an existing journal for inspection: no schema changes, no writes."""

    def __init__(self, path: Path, *, create: bool, readonly: bool = False) -> None:
        self.path = path
        self._conn = connect(path, create=create, readonly=readonly)
        try:
            self.journal_id = self._read_id() if readonly else self._init_schema()
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise classify(exc, path) from exc
            raise CorruptFile(f"{path}: bad journal id: {exc}") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        """For operator tools (verify, compact) that run their own SQL."""
        return self._conn

    def _read_id(self) -> bytes:
        row = self._conn.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone()
        if row is None:
            raise CorruptFile(f"{self.path}: journal has no id")
        return bytes.fromhex(row[0])

    def _init_schema(self) -> bytes:
        db = sqlite_utils.Database(self._conn)
        with db.atomic():
            events = db.table("events")
            events.create(
                {"seq": int, "ts": int, "user": str, "uid": int, "kind": int, "eid": str},
                pk="seq",
                not_null={"ts", "user", "uid", "kind"},
                if_not_exists=True,
            )
            if "eid" not in events.columns_dict:  # journals made before idempotent ids
                events.add_column("eid", str)
            # A client-supplied event id is recorded at most once per hour (idempotent retries).
            self._conn.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS events_by_eid ON events(eid) "
                "WHERE eid IS NOT NULL"
            )
            db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('journal_id', ?), "
                "('schema_version', ?)",
                (uuid.uuid4().hex, str(SCHEMA_VERSION)),
            )
        return self._read_id()

    def append(self, events: EventColumns, uids: Sequence[int]) -> tuple[int, list[int] | None]:
        """Commit events (with their users' ids) in one durable transaction.

        Returns the seq of the last row written and, when some events carry an event id, the
        indices of the events written: an event whose id the journal (or an earlier event of
        this batch) already holds is skipped — acknowledged by the caller but not counted
        again. ``None`` means every event was written. Written rows get consecutive seqs.
        """
        conn = self._conn
        kept: list[int] | None = None
        ids = events.ids if events.ids is not None else [None] * len(events)
        rows: Iterable[InsertRow] = zip(events.timestamps, events.users, uids, events.kinds,
                                        ids, strict=True)
        # ``rows`` stays a generator in the common case (no ids): each row tuple is freed as
        # soon as SQLite has bound it, so a 10,000-event commit does not wake the collector.
        with immediate(conn, self.path):
            if events.ids is not None:
                listed = list(rows)
                kept = self._new_ids(listed)
                rows = [listed[i] for i in kept]
            conn.executemany(
                "INSERT INTO events(ts, user, uid, kind, eid) VALUES (?, ?, ?, ?, ?)", rows
            )
            (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(last), kept

    def _new_ids(self, rows: Sequence[InsertRow]) -> list[int]:
        wanted = list({row[4] for row in rows if row[4] is not None})
        seen: set[str | None] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            seen.update(r[0] for r in self._conn.execute(
                f"SELECT eid FROM events WHERE eid IN ({marks})", chunk))
        kept = []
        for i, row in enumerate(rows):
            eid = row[4]
            if eid is None:
                kept.append(i)
            elif eid not in seen:
                seen.add(eid)
                kept.append(i)
        return kept

    def rows_after(self, seq: int) -> list[JournalRow]:
        try:
            return self._conn.execute(
                "SELECT seq, uid, kind FROM events WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from exc

    def max_seq(self) -> int:
        try:
            (last,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from exc
        return int(last)

    def close(self, *, checkpoint: bool = True) -> None:
        try:
            if checkpoint:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # the WAL stays and is replayed by the next open; nothing is lost
        finally:
            self._conn.close()

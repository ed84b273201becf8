"""The journal of one hour: an append-only SQLite table of committed events, one row per
group commit (a *block*).

A block holds its events as columns: timestamps (int64), user ids (uint32) and kinds (uint8)
as little-endian arrays, the user strings joined by newlines, and the optional event ids the
same way. Validation forbids control characters in users and ids, so a newline can never be
part of one (``append`` checks anyway). One row per commit instead of one per event makes a
10,000-event commit a single insert; per-event rows cost SQLite about 1.4 µs each, most of
a batch's budget.

Each event's user *string* is kept beside its dense id. The string makes the journal
self-sufficient (the dictionary can be rebuilt from journals alone); the id makes replay
cheap and is safe to trust because the dictionary commits an id before any journal row that
uses it (see ``shardstats.storage.users``). ``shardstats compact`` drops the strings of old
hours once the dictionary is verified to hold them.

Every event has a ``seq``: blocks hold consecutive seqs, and the row key is the seq of the
block's last event. ``seq`` is the journal position a snapshot records. ``journal_id`` is a
random identity written when the file is created, so a snapshot of a different (recreated)
journal is recognised as stale. Event ids live in their own table too (``eids``, unique), so
a retried id is recognised with one index probe.

In cluster mode every commit also records, in ``meta`` and in the same transaction, the
highest stream (log) seq whose events the journal holds (``stream_seq``): a node that
restarts knows exactly which log records each hour has applied. Embedded mode never writes it.

Format 1 (one row per event, ``shardstats.storage.format1``) is upgraded to format 2 in
place, seqs kept, the first time a journal is opened for writing; read-only opens and loads
read either format.

A journal is created whole: its tables are written under a temporary name, which is then
linked into place, so a crash never leaves a journal file without tables. Earlier builds could
(a crash between creating the file and its schema); such a *blank* journal reads as an empty
hour to every opener but a creating one, and only a creating one (a shard) writes its tables.

A ``Journal`` is a context manager; ``close`` is idempotent.

Blocking: call only from a worker thread, one thread at a time per journal.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from shardstats.core.aggregate import JournalRow
from shardstats.core.events import EventColumns
from shardstats.errors import CorruptFile
from shardstats.storage import format1
from shardstats.storage.block import Block, pack, unpack
from shardstats.storage.sqlite import classify, connect, immediate, integrity_problems

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2


class Journal:
    """``readonly`` opens an existing journal for inspection: no schema changes, no writes.
    ``upgrade=False`` opens a writable connection that leaves a format-1 journal as it is (read
    through the format-1 reader): for loads, which must not write, but whose writable
    connection lets SQLite remove the ``-wal``/``-shm`` files when it closes."""

    def __init__(self, path: Path, *, create: bool, readonly: bool = False,
                 upgrade: bool = True) -> None:
        self.path = path
        self._closed = False
        if create and not path.exists():
            _create_whole(path)
        elif not create and _is_zero_length(path):
            readonly = True  # a writable open would write a header into it
        self.readonly = readonly
        self._conn = connect(path, create=create, readonly=readonly)
        self.format = SCHEMA_VERSION
        self.blank = False  # no tables: an empty hour (see the module docstring)
        try:
            if not create and not self._tables():
                self.journal_id = self._blank()
            else:
                self.journal_id = self._read_id() if readonly else self._init_schema(upgrade)
        except sqlite3.Error as exc:
            self._conn.close()
            raise classify(exc, path) from exc
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def integrity_problems(self) -> list[str]:
        """What SQLite's ``integrity_check`` finds wrong with the file (empty: nothing)."""
        return integrity_problems(self._conn)

    @property
    def connection(self) -> sqlite3.Connection:
        """For operator tools (verify, compact) that run their own SQL."""
        return self._conn

    def _tables(self) -> set[str]:
        return {name for (name,) in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _blank(self) -> bytes:
        log.warning("%s has no tables (a crash while an earlier build created it): read as an "
                    "empty hour; the next event for the hour creates them", self.path)
        self.blank = True
        return b""

    def _detect_format(self) -> set[str]:
        tables = self._tables()
        self.format = 1 if format1.is_format_1(tables) else SCHEMA_VERSION
        return tables

    def _read_id(self) -> bytes:
        if "meta" not in self._detect_format():  # SQLite would only say "no such table"
            raise CorruptFile(f"{self.path}: journal has tables but no meta table")
        row = self._conn.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone()
        if row is None:
            raise CorruptFile(f"{self.path}: journal has no id")
        try:
            return bytes.fromhex(row[0])
        except (ValueError, TypeError) as exc:  # not text, or not hex digits
            raise CorruptFile(f"{self.path}: bad journal id: {exc}") from exc

    def _init_schema(self, upgrade: bool) -> bytes:
        tables = self._tables()
        if {"blocks", "eids", "meta"} <= tables and "events" not in tables:
            return self._read_id()  # the usual open: nothing to write
        if not upgrade:  # a load never writes: format 1 is read as it is, damage reported
            return self._read_id()
        conn = self._conn
        with immediate(conn, self.path):
            tables = self._tables()  # again, under the write lock: another opener may have won
            conn.execute(
                "CREATE TABLE IF NOT EXISTS blocks (last_seq INTEGER PRIMARY KEY, "
                "count INTEGER NOT NULL, ts BLOB NOT NULL, uid BLOB NOT NULL, "
                "kind BLOB NOT NULL, users TEXT, eids TEXT)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS eids (eid TEXT PRIMARY KEY) WITHOUT ROWID")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('journal_id', ?)",
                (uuid.uuid4().hex,),
            )
            if format1.TABLE in tables:
                format1.upgrade(conn, self.path, self._insert_block)
            # An earlier build would create an empty ``events`` table here and write into it
            # beside the blocks; with a view of that name in the way it fails loudly instead
            # (a view cannot be indexed).
            conn.execute("CREATE VIEW IF NOT EXISTS events AS SELECT NULL AS seq WHERE 0")
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        return self._read_id()

    # -- writing ---------------------------------------------------------------------------

    def append(self, events: EventColumns, uids: Sequence[int],
               stream_seq: int | None = None) -> tuple[int, list[int] | None]:
        """Commit events (with their users' ids) as one block in one durable transaction;
        ``stream_seq`` (cluster mode) is recorded in the same transaction.

        Returns the seq of the last event written and, when some events carry an event id,
        the indices of the events written: an event whose id the journal (or an earlier event
        of this batch) already holds is skipped — acknowledged by the caller but not counted
        again. ``None`` means every event was written. Written events get consecutive seqs.
        """
        conn = self._conn
        kept: list[int] | None = None
        with immediate(conn, self.path):
            (last,) = conn.execute("SELECT coalesce(max(last_seq), 0) FROM blocks").fetchone()
            if events.ids is not None:
                kept = self._new_ids(events.ids)
                events, uids = events.select(kept), [uids[i] for i in kept]
            if len(events):
                last += len(events)
                self._insert_block(last, events, uids, keep_users=True)
            if stream_seq is not None:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('stream_seq', ?)",
                             (str(stream_seq),))
        return int(last), kept

    def stream_seq(self) -> int:
        """The highest log seq whose events this journal holds (0: none, or embedded mode)."""
        if self.blank:
            return 0
        try:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'stream_seq'").fetchone()
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from exc
        try:
            return 0 if row is None else int(row[0])
        except (TypeError, ValueError) as exc:
            raise CorruptFile(f"{self.path}: bad stream_seq {row[0]!r}") from exc

    def _insert_block(self, last_seq: int, events: EventColumns, uids: Sequence[int], *,
                      keep_users: bool) -> None:
        n = len(events)
        users = "\n".join(events.users) if keep_users else None
        eids = None
        if events.ids is not None:
            eids = "\n".join(eid or "" for eid in events.ids)
            if eids.count("\n") != n - 1:
                raise ValueError("an event id contains a newline")
            self._conn.executemany("INSERT INTO eids(eid) VALUES (?)",
                                   ((eid,) for eid in events.ids if eid))
        if users is not None and users.count("\n") != n - 1:
            raise ValueError("a user contains a newline")
        self._conn.execute(
            "INSERT INTO blocks(last_seq, count, ts, uid, kind, users, eids) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (last_seq, n, pack("q", events.timestamps), pack("I", uids),
             bytes(events.kinds), users, eids),
        )

    def _new_ids(self, ids: Sequence[str | None]) -> list[int]:
        wanted = list({eid for eid in ids if eid is not None})
        seen: set[str | None] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            seen.update(r[0] for r in self._conn.execute(
                f"SELECT eid FROM eids WHERE eid IN ({marks})", chunk))
        kept = []
        for i, eid in enumerate(ids):
            if eid is None:
                kept.append(i)
            elif eid not in seen:
                seen.add(eid)
                kept.append(i)
        return kept

    def drop_user_strings(self) -> int:
        """Forget the user strings (compaction; the ids stay): blocks changed."""
        with immediate(self._conn, self.path):
            changed = self._conn.execute(
                "UPDATE blocks SET users = NULL WHERE users IS NOT NULL").rowcount
            self._conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('compacted', '1')")
        return int(changed)

    # -- reading ---------------------------------------------------------------------------

    def blocks_after(self, seq: int, *, full: bool = False) -> Iterator[Block]:
        """Blocks holding events after ``seq``, in order (the first may start at or before
        ``seq``: ``HourAggregate.apply_block`` skips what it has). ``full`` adds timestamps,
        users and ids."""
        if self.blank:
            return
        try:
            if self.format == 1:
                # Read whole inside one read transaction (no generator left holding it open).
                with self._snapshot():
                    blocks = list(format1.read_blocks(self._conn, self.path, seq, full)
                                  if self.format == 1 else self._blocks(seq, full))
                yield from blocks
            else:
                yield from self._blocks(seq, full)
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from exc

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction in which the format is checked again: a format-1 journal opened
        read-only may have been upgraded by the server since (its seqs are kept, so reading
        the blocks instead is reading the same journal)."""
        self._conn.execute("BEGIN")
        try:
            self._detect_format()
            yield
        finally:
            self._conn.execute("COMMIT")

    def _blocks(self, seq: int, full: bool) -> Iterator[Block]:
        extra = ", ts, users, eids" if full else ""
        cursor = self._conn.execute(
            f"SELECT last_seq, count, uid, kind{extra} FROM blocks WHERE last_seq > ? "
            "ORDER BY last_seq", (seq,))
        for row in cursor:
            try:
                yield self._decode(row, full)
            except ValueError as exc:  # what ``_decode`` finds wrong with the row
                raise CorruptFile(f"{self.path}: block ending at seq {row[0]} is "
                                  f"damaged: {exc}") from exc

    def _decode(self, row: tuple[object, ...], full: bool) -> Block:
        last, count, uid, kind = row[:4]
        if not (isinstance(last, int) and isinstance(count, int) and isinstance(uid, bytes)
                and isinstance(kind, bytes) and len(uid) == 4 * count
                and len(kind) == count and count > 0):
            raise ValueError("column sizes do not match its count")
        block = Block(last - count + 1, unpack("I", uid), list(kind))
        if not full:
            return block
        ts, users, eids = row[4:]
        if not isinstance(ts, bytes) or len(ts) != 8 * count:
            raise ValueError("timestamps do not match its count")
        names = users.split("\n") if isinstance(users, str) else None
        ids = ([eid or None for eid in eids.split("\n")] if isinstance(eids, str) else None)
        if (names is not None and len(names) != count) or (ids is not None
                                                           and len(ids) != count):
            raise ValueError("users or ids do not match its count")
        return block._replace(timestamps=unpack("q", ts), users=names, ids=ids)

    def rows_after(self, seq: int) -> list[JournalRow]:
        """``(seq, uid, kind)`` of every event after ``seq`` (for checks and tests)."""
        return [row for block in self.blocks_after(seq)
                for row in zip(itertools.count(block.first_seq), block.uids, block.kinds)
                if row[0] > seq]

    def max_seq(self) -> int:
        if self.blank:
            return 0
        try:
            if self.format == 1:
                with self._snapshot():
                    return self._max_seq()
            return self._max_seq()
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from exc

    def _max_seq(self) -> int:
        if self.format == 1:
            return format1.max_seq(self._conn)
        (last,) = self._conn.execute("SELECT coalesce(max(last_seq), 0) FROM blocks").fetchone()
        return int(last)

    def close(self, *, checkpoint: bool | None = None) -> None:
        """Idempotent. ``checkpoint`` folds the WAL into the file first (by default unless
        opened read-only, which cannot)."""
        if self._closed:
            return
        self._closed = True
        try:
            if checkpoint if checkpoint is not None else not self.readonly:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # the WAL stays and is replayed by the next open; nothing is lost
        finally:
            self._conn.close()


def _is_zero_length(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return False


def _create_whole(path: Path) -> None:
    """Create an empty journal at ``path``: its tables are written and fsynced under a
    temporary name first, then linked into place (a link never replaces a journal another
    creator put there first: theirs is as good as ours)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    try:
        with Journal(temp, create=True):  # the file exists, so its tables go straight in
            pass
        _fsync(temp, os.O_RDONLY)
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        for leftover in (temp, temp.with_name(temp.name + "-wal"),
                         temp.with_name(temp.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

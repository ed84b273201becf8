"""SQLite plumbing shared by the journals and the user dictionary: how a file is opened,
how its errors are named, and the one shape of write transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shardstats.errors import CorruptFile, StorageError


def connect(path: Path, *, create: bool, readonly: bool = False) -> sqlite3.Connection:
    mode = "ro" if readonly else "rwc" if create else "rw"
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode={mode}",
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            timeout=10.0,
        )
        if not readonly:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except BaseException:
                # Otherwise every failed open (a corrupt file) holds a descriptor until the
                # cyclic garbage collector happens to run.
                conn.close()
                raise
    except sqlite3.DatabaseError as exc:
        raise classify(exc, path) from exc
    return conn


# Primary result codes (the low byte of ``sqlite_errorcode``) that say the file is damaged.
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def classify(exc: sqlite3.Error, path: Path) -> StorageError:
    """By SQLite's result code, not its message (the wording is not an interface)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _CORRUPT_CODES:
        return CorruptFile(f"{path}: {exc}")
    return StorageError(f"{path}: {exc}")


def as_storage_error(exc: BaseException) -> StorageError | None:
    """The ``StorageError`` an exception from a storage operation stands for, or None when it
    is none a storage operation is expected to raise: then it is a bug, not a disk problem."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.Error | OSError):
        return StorageError(str(exc))
    return None


def integrity_problems(conn: sqlite3.Connection, limit: int = 5) -> list[str]:
    """The first ``limit`` problems SQLite's ``integrity_check`` reports (empty: none); raises
    ``sqlite3.DatabaseError`` when the file is not even a database."""
    rows = [row[0] for row in conn.execute(f"PRAGMA integrity_check({limit})")]
    return [] if rows == ["ok"] else rows


@contextmanager
def immediate(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """One write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on anything else;
    SQLite errors come out as ``StorageError``/``CorruptFile`` naming the file."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise classify(exc, path) from exc

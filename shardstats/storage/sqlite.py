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
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        raise classify(exc, path) from exc
    return conn


def classify(exc: sqlite3.Error, path: Path) -> StorageError:
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in str(exc) or "malformed" in str(exc) or "no such table" in str(exc)
    ):
        return CorruptFile(f"{path}: {exc}")
    return StorageError(f"{path}: {exc}")


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

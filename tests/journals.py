"""Journal files as a crash between creating the file and its tables left them (earlier builds),
for the tests of every reader that must take such a file as an empty hour."""

from __future__ import annotations

import sqlite3
from pathlib import Path

BLANK_KINDS = ["zero-length", "header-only"]


def write_blank_journal(path: Path, kind: str) -> None:
    """``zero-length``: an empty file; ``header-only``: a SQLite header in WAL mode, no tables."""
    if kind == "zero-length":
        path.write_bytes(b"")
    else:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()

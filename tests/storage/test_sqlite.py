"""SQLite plumbing: failed opens release their descriptor; errors are named by result code."""

from __future__ import annotations

import gc
import os
import sqlite3
from pathlib import Path

import pytest

from shardstats.errors import CorruptFile, StorageError
from shardstats.storage.sqlite import as_storage_error, classify, connect


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_failed_open_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    corrupt = tmp_path / "1.sqlite"
    corrupt.write_bytes(b"this is not a database" * 200)
    enabled = gc.isenabled()
    gc.disable()  # only reference counting may close what a failed open left
    try:
        before = open_descriptors()
        for _ in range(50):
            with pytest.raises(CorruptFile):
                connect(corrupt, create=False)
        after = open_descriptors()
    finally:
        if enabled:
            gc.enable()
    assert after == before


def test_corruption_is_recognised_by_result_code_not_wording(tmp_path: Path) -> None:
    corrupt = tmp_path / "1.sqlite"
    corrupt.write_bytes(b"x" * 8192)
    with pytest.raises(CorruptFile) as caught:
        connect(corrupt, create=False)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert caught.value.__cause__.sqlite_errorcode == sqlite3.SQLITE_NOTADB
    # The same words without SQLite's code behind them are no evidence of a damaged file.
    worded = classify(sqlite3.DatabaseError("file is not a database"), corrupt)
    assert type(worded) is StorageError


def test_only_storage_failures_are_storage_errors(tmp_path: Path) -> None:
    assert isinstance(as_storage_error(sqlite3.OperationalError("disk I/O error")),
                      StorageError)
    assert isinstance(as_storage_error(OSError(28, "No space left on device")), StorageError)
    corrupt = CorruptFile("x")
    assert as_storage_error(corrupt) is corrupt
    assert as_storage_error(TypeError("a bug")) is None
    assert as_storage_error(ValueError("a bug")) is None

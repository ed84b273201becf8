"""``shardstats prune``: retention — remove (or archive) hours older than a limit.

Needs the data-dir lock, i.e. the server must be stopped: a running server may hold a pruned
hour in memory or have its journal open. After pruning, a GET for that hour answers zeros.
With ``archive``, files are moved (journal, its -wal/-shm, snapshot) under
``archive/journals`` and ``archive/snapshots`` with the same names, so they can be moved back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from shardstats.errors import StorageError
from shardstats.ops.common import hour_iso, size_of
from shardstats.storage.datadir import DataDir


@dataclass
class PruneResult:
    hour: int
    iso: str
    files: list[Path]
    bytes: int


def prunable(datadir: DataDir, current_hour: int, older_than_hours: int) -> list[PruneResult]:
    results = []
    for hour in sorted(datadir.journal_hours()):
        if hour < current_hour - older_than_hours:
            files = [p for p in (*datadir.journal_files(hour), datadir.snapshot_path(hour))
                     if p.exists()]
            results.append(PruneResult(hour, hour_iso(hour), files, size_of(files)))
    return results


def prune(datadir: DataDir, results: list[PruneResult], archive: Path | None) -> dict[int, str]:
    """Remove or move the files of each hour; return the hours that could not be pruned, with
    why. Their files stay where they are (a damaged journal deserves a look before it goes);
    one such hour does not stop the others."""
    failed = {}
    for result in results:
        try:
            _prune_hour(datadir, result, archive)
        except (StorageError, OSError) as exc:
            failed[result.hour] = str(exc)
    return failed


def _prune_hour(datadir: DataDir, result: PruneResult, archive: Path | None) -> None:
    """The journal goes last, so a half-done prune is re-run."""
    journal = datadir.journal_path(result.hour)
    if archive is not None and journal.exists():
        # Fold the WAL into the journal so the archived file stands on its own.
        with datadir.open_journal(result.hour, create=False):
            pass
    # The checkpoint above may have removed the -wal/-shm files: move what is there now.
    present = [p for p in result.files if p.exists()]
    for path in sorted(present, key=lambda p: p == journal):
        if archive is None:
            path.unlink(missing_ok=True)
        else:
            target = archive / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)

"""``shardstats compact``: fold closed hours into fresh snapshots and shrink their journals.

For every hour older than the current one by ``margin_hours``:
1. check every journal event's (user, uid) against the user dictionary — an hour that
   disagrees is left untouched and reported;
2. recompute the aggregate from the whole journal and write it as the hour's snapshot
   (atomic: temp file, fsync, rename, fsync the directory);
3. drop the blocks' user strings in one transaction: the dictionary already holds them
   durably (step 1 proved it) and the ids are all a rebuild needs;
4. checkpoint the WAL and ``VACUUM`` the journal, then report the bytes before and after.

Safe while the server runs: every change to a journal is an SQLite transaction, so SQLite's
own per-file write lock is the per-hour lock. A late event for a compacting hour waits for
the lock (the server's busy timeout is 10 s) and is then committed as usual; block keys
survive ``VACUUM`` (INTEGER PRIMARY KEY), so every snapshot position stays valid. Opening a
journal for writing upgrades a format-1 journal in place (see ``storage.journal``).
Safe to interrupt: each step is atomic and idempotent, so a rerun finishes the job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shardstats.core.aggregate import HourAggregate
from shardstats.errors import StorageError
from shardstats.ops.common import dictionary_disagreements, hour_iso, size_of
from shardstats.shards import loader
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal


@dataclass
class CompactResult:
    hour: int
    iso: str
    events: int
    bytes_before: int
    bytes_after: int
    status: str  # "compacted", "already compact", or "skipped: reason"


def compact(
    datadir: DataDir,
    hours: Iterable[int],
    progress: Callable[[Iterable[int]], Iterable[int]] = lambda it: it,
) -> list[CompactResult]:
    return [compact_hour(datadir, hour) for hour in progress(list(hours))]


def compact_hour(datadir: DataDir, hour: int) -> CompactResult:
    files = datadir.journal_files(hour)
    before = size_of(files)
    result = CompactResult(hour, hour_iso(hour), 0, before, before, "compacted")
    try:
        journal = datadir.open_journal(hour, create=False)
    except StorageError as exc:
        result.status = f"skipped: journal unreadable: {exc}"
        return result
    with journal:
        try:
            _compact_journal(datadir, journal, result)
        except (sqlite3.Error, StorageError, OSError) as exc:
            result.status = f"skipped: {exc}"
    result.bytes_after = size_of(files)
    return result


def _compact_journal(datadir: DataDir, journal: Journal, result: CompactResult) -> None:
    if journal.blank:  # no tables, no events: nothing to compact (and nothing to write)
        result.status = "already compact"
        return
    if not datadir.users_path.exists():
        raise StorageError("user dictionary missing; refusing to drop user strings")
    check = dictionary_disagreements(journal, datadir)
    if check.missing or check.renamed:
        result.status = (f"skipped: {check.missing + check.renamed} events disagree with the "
                         "user dictionary")
        return
    aggregate = HourAggregate(result.hour)
    loader.replay(aggregate, journal)
    result.events = aggregate.events
    snapshot_current = _snapshot_covers(datadir, result.hour, journal, aggregate.last_seq)
    conn = journal.connection
    (free_pages,) = conn.execute("PRAGMA freelist_count").fetchone()
    if not check.named and snapshot_current and not free_pages:
        result.status = "already compact"
        return
    if not snapshot_current:
        loader.write_snapshot(datadir, aggregate, journal.journal_id)
    if check.named:
        journal.drop_user_strings()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _snapshot_covers(datadir: DataDir, hour: int, journal: Journal, last_seq: int) -> bool:
    base = loader.snapshot_base(datadir, hour, journal)
    return base is not None and base.last_seq == last_seq

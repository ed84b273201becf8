"""``shardstats verify``: check every hour's files agree, without modifying anything.

Per hour:
1. SQLite ``integrity_check`` of the journal (read-only connection);
2. the aggregate recomputed from the journal events alone;
3. the snapshot, if any: checksum and structure, journal identity, position, and counters and
   bitmap equal to the journal's rows up to that position (a snapshot *behind* the journal is
   normal: the tail is replayed on load);
4. every user id in the journal exists in the user dictionary, with the same user string
   where the journal still holds it.
And once: the dictionary's integrity, and that it holds at least the ids its mark
(``users.issued``) records.
Safe while the server runs: SQLite readers see a consistent committed state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from shardstats.core import snapshot as codec
from shardstats.core.aggregate import HourAggregate
from shardstats.errors import CorruptFile, StorageError
from shardstats.ops.common import dictionary_disagreements, hour_iso
from shardstats.storage import issued
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal


@dataclass
class HourReport:
    hour: int
    iso: str
    events: int = 0
    unique_users: int = 0
    clicks: int = 0
    impressions: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL"

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "status": self.status}


@dataclass
class VerifyReport:
    hours: list[HourReport]
    problems: list[str]  # not tied to one hour (the dictionary itself)

    @property
    def ok(self) -> bool:
        return not self.problems and all(h.ok for h in self.hours)

    def summary(self) -> dict[str, int]:
        return {
            "hours": len(self.hours),
            "failed_hours": sum(not h.ok for h in self.hours),
            "events": sum(h.events for h in self.hours),
            "other_problems": len(self.problems),
        }


def verify(
    datadir: DataDir,
    hours: Iterable[int],
    progress: Callable[[Iterable[int]], Iterable[int]] = lambda it: it,
) -> VerifyReport:
    problems = _check_dictionary(datadir)
    reports = [verify_hour(datadir, hour) for hour in progress(list(hours))]
    return VerifyReport(reports, problems)


def _check_dictionary(datadir: DataDir) -> list[str]:
    path = datadir.users_path
    mark = datadir.read_users_mark()  # before the table: a running server's mark only lags it
    if not path.exists():
        return [] if not datadir.journal_hours() else [f"{path}: user dictionary missing"]
    try:
        with datadir.open_users(readonly=True) as store:
            problems = store.integrity_problems()
        behind = issued.mark_problem(mark, issued.dictionary_state(path), path,
                                     datadir.users_mark_path)
    except StorageError as exc:  # names the file already
        return [str(exc)]
    except sqlite3.DatabaseError as exc:
        return [f"{path}: {exc}"]
    found = [f"{path}: " + "; ".join(problems)] if problems else []
    return found + ([behind] if behind else [])


def verify_hour(datadir: DataDir, hour: int) -> HourReport:
    report = HourReport(hour, hour_iso(hour))
    try:
        journal = datadir.open_journal(hour, create=False, readonly=True)
    except StorageError as exc:
        report.problems.append(f"journal unreadable: {exc}")
        return report
    with journal:
        try:
            _check_journal(journal, datadir, report)
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"journal corrupt: {journal.path}: {exc}")
        except StorageError as exc:
            report.problems.append(f"journal corrupt: {exc}")
    return report


def _check_journal(journal: Journal, datadir: DataDir, report: HourReport) -> None:
    integrity = journal.integrity_problems()
    if integrity:
        report.problems.append(f"journal corrupt: {journal.path}: " + "; ".join(integrity[:3]))
        return
    if journal.blank:
        report.notes.append("journal has no tables (a crash while an earlier build created "
                            "it): an empty hour")
    snap = _read_snapshot(datadir, report)
    prefix = HourAggregate(report.hour)
    full = HourAggregate(report.hour)
    covered = snap.aggregate.last_seq if snap else 0
    rows = journal.rows_after(0)
    prefix.apply(row for row in rows if row[0] <= covered)
    full.apply(rows)
    report.events, report.clicks, report.impressions = full.events, full.clicks, full.impressions
    report.unique_users = len(full.users)
    if snap is not None:
        where = f"snapshot {datadir.snapshot_path(report.hour).name}"
        _compare_snapshot(snap, where, journal, prefix, full, report)
    else:
        report.notes.append("no snapshot")
    _check_ids(journal, datadir, report)


def _read_snapshot(datadir: DataDir, report: HourReport) -> codec.Snapshot | None:
    data = datadir.read_snapshot(report.hour)
    if data is None:
        return None
    try:
        return codec.decode(data)
    except CorruptFile as exc:
        report.problems.append(f"snapshot corrupt: {datadir.snapshot_path(report.hour)}: {exc}")
        return None


def _compare_snapshot(
    snap: codec.Snapshot,
    where: str,
    journal: Journal,
    prefix: HourAggregate,
    full: HourAggregate,
    report: HourReport,
) -> None:
    agg = snap.aggregate
    if agg.hour != report.hour:
        report.problems.append(f"{where} is for hour {agg.hour}")
    elif snap.journal_id != journal.journal_id:
        report.problems.append(f"{where} belongs to another journal (stale)")
    elif agg.last_seq > full.last_seq:
        report.problems.append(
            f"{where} covers {agg.last_seq} rows but the journal ends at {full.last_seq}"
        )
    elif (agg.clicks, agg.impressions) != (prefix.clicks, prefix.impressions):
        report.problems.append(
            f"{where} counters differ from the journal: clicks {agg.clicks} vs "
            f"{prefix.clicks}, impressions {agg.impressions} vs {prefix.impressions}"
        )
    elif agg.users != prefix.users:
        report.problems.append(
            f"{where} user bitmap differs from the journal ({len(agg.users)} vs "
            f"{len(prefix.users)} users)"
        )
    elif agg.last_seq < full.last_seq:
        report.notes.append(f"snapshot {full.last_seq - agg.last_seq} rows behind (normal)")


def _check_ids(journal: Journal, datadir: DataDir, report: HourReport) -> None:
    if not datadir.users_path.exists():
        if report.events:
            report.problems.append("user dictionary missing")
        return
    check = dictionary_disagreements(journal, datadir)
    if check.missing:
        report.problems.append(f"{check.missing} events use user ids missing from the "
                               "dictionary")
    if check.renamed:
        report.problems.append(f"{check.renamed} events disagree with the dictionary on a "
                               "user string")

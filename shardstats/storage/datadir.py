"""The data directory: where each kind of file lives, and atomic snapshot files.

    <data-dir>/
      LOCK                  flock held by the one server using the directory
      users.sqlite          user dictionary (+ -wal, -shm while open)
      users.issued          ids users.sqlite is known to hold (``shardstats.storage.issued``)
      users-index/          its name index: sorted runs, a cache of users.sqlite
      journals/<hour>.sqlite   one journal per UTC hour (hour = timestamp_ms // 3_600_000)
      snapshots/<hour>.snap    cache of that journal's aggregate; safe to delete
      stream-position       cluster mode: log seq applied to every hour (a cache too)

This is the narrow storage interface the shards and the operator tools use: every file name
is spelled here and nowhere else. Tests substitute a subclass to inject faults. Blocking: call
from worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shardstats.core.snapshot import JournalState
from shardstats.errors import StorageError
from shardstats.storage import issued
from shardstats.storage.journal import Journal
from shardstats.storage.lock import DataDirLock
from shardstats.storage.users import TAIL_SIZE, UserStore

log = logging.getLogger(__name__)

# Journals a shard of this process writes. Two writers of one journal would each number rows
# from what they last saw and skip the other's, so a second claim is a bug, refused loudly.
_writers: set[str] = set()
_writers_lock = threading.Lock()


class WriterConflict(RuntimeError):
    """A second shard tried to write a journal another shard of this process holds (a bug)."""


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.journals = root / "journals"
        self.snapshots = root / "snapshots"
        self.lock = DataDirLock(root)

    def prepare(self) -> None:
        for path in (self.root, self.journals, self.snapshots):
            path.mkdir(parents=True, exist_ok=True)

    def remove_stale_temporaries(self, older_than: float = 60.0) -> int:
        """Delete the temporary snapshot and journal files (and a temporary journal's -wal and
        -shm) a crash left behind; never a fresh one: it may be in use."""
        removed = 0
        cutoff = time.time() - older_than
        mark = f".{self.users_mark_path.name}."
        for folder in (self.snapshots, self.journals, self.root):
            for entry in os.scandir(folder):
                if folder == self.root and not entry.name.startswith(mark):
                    continue  # in the root only the mark's temporaries
                if entry.name.startswith(".") and entry.name.endswith((".tmp", ".tmp-wal",
                                                                       ".tmp-shm")):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
        return removed

    @property
    def users_path(self) -> Path:
        return self.root / "users.sqlite"

    def journal_path(self, hour: int) -> Path:
        return self.journals / f"{hour}.sqlite"

    def journal_files(self, hour: int) -> list[Path]:
        """The journal and the ``-wal``/``-shm`` files SQLite keeps beside it while open."""
        base = self.journal_path(hour)
        return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]

    def snapshot_path(self, hour: int) -> Path:
        return self.snapshots / f"{hour}.snap"

    def journal_hours(self) -> set[int]:
        return _hours_in(self.journals, "sqlite")

    def snapshot_hours(self) -> set[int]:
        return _hours_in(self.snapshots, "snap")

    def open_journal(self, hour: int, *, create: bool, readonly: bool = False,
                     upgrade: bool = True) -> Journal:
        return Journal(self.journal_path(hour), create=create, readonly=readonly,
                       upgrade=upgrade)

    @contextlib.contextmanager
    def journal_writer(self, hour: int) -> Iterator[None]:
        """Hold the right to write the hour's journal (one holder per process)."""
        key = os.path.abspath(self.journal_path(hour))
        with _writers_lock:
            if key in _writers:
                raise WriterConflict(f"hour {hour}: journal {key} already has a writer")
            _writers.add(key)
        try:
            yield
        finally:
            with _writers_lock:
                _writers.discard(key)

    def journal_state(self, hour: int) -> JournalState | None:
        """The state of a closed journal file (``stat``), or None when it is missing or has
        a ``-wal`` file (rows may live there that the file's own state does not cover)."""
        path = self.journal_path(hour)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if os.path.lexists(f"{path}-wal"):
            return None
        return JournalState(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def settled_journal_state(self, hour: int) -> JournalState | None:
        """``journal_state`` if it may be recorded as a snapshot's proof now (its ctime lies
        far enough in the past: ``JournalState.settled``), else None."""
        now = time.time_ns()  # before the stat: see ``JournalState.settled``
        state = self.journal_state(hour)
        return state if state is not None and state.settled(now) else None

    def open_users(self, *, readonly: bool = False, tail_size: int = TAIL_SIZE) -> UserStore:
        return UserStore(self.users_path, readonly=readonly, tail_size=tail_size,
                         index_dir=self.root / "users-index")

    # -- the user dictionary's mark (``shardstats.storage.issued``) ------------------------

    @property
    def users_mark_path(self) -> Path:
        return self.root / "users.issued"

    def read_users_mark(self) -> issued.Mark | None:
        return issued.read_mark(self.users_mark_path)

    def write_users_mark(self, mark: issued.Mark) -> None:
        """Record that ``users.sqlite`` holds ids ``1..mark.ids`` (ids already committed):
        its files are fsynced first, then the mark replaced atomically."""
        users = self.users_path
        issued.sync_files([users, users.with_name(users.name + "-wal")])
        _write_atomically(self.users_mark_path, issued.encode(mark))

    def check_users(self) -> None:
        """Refuse (``DictionaryBehind``) a ``users.sqlite`` older than its mark or than the
        newest journals; call with the lock held, before any id is assigned."""
        mark = self.read_users_mark()  # before the dictionary: a mark never runs ahead of it
        state = issued.dictionary_state(self.users_path)
        hours = self.journal_hours()
        problem = issued.mark_problem(mark, state, self.users_path, self.users_mark_path)
        if problem is not None and not hours:
            # No journal gives an id to anyone: nothing can be undercounted. The mark would
            # refuse a later start for good: drop it (the dictionary writes its own).
            log.warning("%s; no journal uses those ids: %s removed", problem,
                        self.users_mark_path)
            self.users_mark_path.unlink(missing_ok=True)
            return
        if problem is None:
            problem = issued.journal_problem(self._newest_uids(hours), state, self.users_path)
        if problem is not None:
            raise issued.refusal(problem, self.root)

    def _newest_uids(self, hours: set[int]) -> dict[Path, int]:
        """The highest user id near the end of each of the journals written last."""
        def written(hour: int) -> int:
            times = []
            for path in self.journal_files(hour)[:2]:  # the file and its -wal
                with contextlib.suppress(FileNotFoundError):
                    times.append(os.stat(path).st_mtime_ns)
            return max(times, default=0)

        newest = sorted(hours, key=written)[-issued.NEWEST_JOURNALS:]
        uids = {}
        for hour in newest:
            try:
                uids[self.journal_path(hour)] = self._read_untouched(hour, issued.newest_uid)
            except StorageError:
                continue  # a damaged journal fails its own hour only, as it does when loaded
        return uids

    def _read_untouched(self, hour: int, read: Callable[[Journal], int]) -> int:
        """``read`` a journal and leave its files as they were: a writable connection would
        checkpoint a crashed writer's -wal (a change a snapshot proof must still see), and
        a read-only one leaves a -wal and -shm behind (which would make the hour's proof
        unusable): the empty ones it made are removed (the lock is held: no other user)."""
        _, wal, shm = self.journal_files(hour)
        had = {wal: wal.exists(), shm: shm.exists()}
        try:
            with self.open_journal(hour, create=False, readonly=True) as journal:
                return read(journal)
        finally:
            if not had[wal] and wal.exists() and wal.stat().st_size == 0:
                for path in (wal, shm):
                    if not had[path]:
                        path.unlink(missing_ok=True)

    def read_snapshot(self, hour: int) -> bytes | None:
        try:
            return self.snapshot_path(hour).read_bytes()
        except FileNotFoundError:
            return None

    def write_snapshot(self, hour: int, data: bytes) -> None:
        """Atomically replace the snapshot: temp file, fsync, rename, fsync the directory."""
        _write_atomically(self.snapshot_path(hour), data)

    # -- cluster mode ----------------------------------------------------------------------

    @property
    def stream_position_path(self) -> Path:
        return self.root / "stream-position"

    def read_stream_position(self) -> int:
        """The log seq up to which every record is applied to every hour (0: none known).
        A cache like the snapshots: a lower value only means a longer replay."""
        try:
            text = self.stream_position_path.read_text().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0

    def write_stream_position(self, seq: int) -> None:
        _write_atomically(self.stream_position_path, f"{seq}\n".encode())


def _hours_in(folder: Path, extension: str) -> set[int]:
    """The hours of the ``<hour>.<extension>`` files in ``folder`` (temporaries start with a
    dot and are not hours)."""
    hours = set()
    for entry in os.scandir(folder):
        stem, dot, ext = entry.name.partition(".")
        if dot and ext == extension and stem.lstrip("-").isdigit():
            hours.add(int(stem))
    return hours


def _write_atomically(final: Path, data: bytes) -> None:
    """Replace ``final``: temp file, fsync, rename, fsync the directory."""
    # A unique temporary name: the compactor may write the same hour's snapshot as the
    # server; each rename installs a complete file, whichever lands last is valid.
    temp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    os.close(fd)
    os.replace(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

"""The persistent user dictionary: user string -> stable dense uint32 id.

Where the user string lives, and why recovery never depends on anything not yet durable:

1. An id is born in ``users.sqlite`` and committed there (WAL, ``synchronous=FULL``) *before*
   the shard writes any journal event that carries it. So every id in a journal is already
   durable in the dictionary, and a snapshot (written only from applied, i.e. committed, rows)
   can only refer to durable ids.
2. Each journal event keeps the user string *and* its id. The string is the truth: if the
   dictionary were lost, it can be rebuilt from the journals' ``(user, uid)`` pairs, and the
   bitmaps in snapshots stay meaningful. The id is the fast path: replay needs no lookups.
3. If the process dies after the dictionary commit but before the journal commit, the
   dictionary holds an id no event uses: harmless (ids are never reused, only skipped).

How a name is found, and why a new name costs the same at 10M names as at 1k:

4. ``users.sqlite`` holds one table, ``users(id INTEGER PRIMARY KEY, name)``, appended in id
   order: a commit of new names writes the last pages of one B-tree, whatever its size. It
   has no index on ``name`` (format 1 had one; opening drops it): random inserts into a name
   B-tree were what made a new name cost more as the dictionary grew.
5. Names are looked up in memory for the newest ids (the *tail*, at most about ``tail_size``
   of them) and in the sorted runs of ``shardstats.storage.user_index`` for all older ids.
   ``maintain`` turns the tail into a run and merges runs; it is slow (it writes files) and
   runs beside ``assign`` in another thread, taking the lock only to swap what it built in.
6. Exactness: a hash match is checked against the name stored under that id, and every id up
   to ``indexed`` is in exactly one run (the runs are a cache of the table, rebuilt from it
   whenever one is missing or damaged). So a name has at most one id, for good: a name not in
   the tail nor behind any run hash is really not in the table.

Ids start at 1 and must stay below 2**32 because roaring bitmaps hold 32-bit values.
A ``UserStore`` is a context manager; ``close`` is idempotent. Blocking: call from worker
threads; ``assign`` and ``maintain`` may run at the same time (one of each), everything else
one call at a time.
"""

from __future__ import annotations

import itertools
import logging
import operator
import secrets
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import msgspec
import numpy as np
import sqlite_utils

from shardstats.errors import StorageError
from shardstats.storage import user_index
from shardstats.storage.sqlite import classify, connect, immediate, integrity_problems

log = logging.getLogger(__name__)

MAX_UID = 2**32 - 1
TAIL_SIZE = 131_072  # names held in memory before they go to a run (~20 MiB)
_CHUNK = 500  # ids per IN (...) query, well under SQLite's parameter limit
_SPOT_CHECKS = 64  # ids of each run compared with the table on open
_OPEN_CHUNK = 1_048_576  # rows per run when runs are (re)built from the table on open


class UserStore:
    def __init__(self, path: Path, *, readonly: bool = False, tail_size: int = TAIL_SIZE,
                 index_dir: Path | None = None) -> None:
        if tail_size < 1:
            raise ValueError("tail_size must be at least 1")
        self.path = path
        self.index_dir = index_dir or path.with_name(path.stem + "-index")
        self._readonly = readonly
        self._tail_size = tail_size
        self._lock = threading.Lock()
        self._closed = False
        self._runs: list[user_index.Run] = []
        self._tail: dict[str, int] = {}  # name -> id for ids above the runs
        self._tail_names: list[str] = []  # the same names, in id order
        self._tail_ids = array("Q")
        self._tail_hashes = array("Q")
        self._conn = connect(path, create=not readonly, readonly=readonly)
        if readonly:
            self._seed = self._next = 0
            return
        try:
            self._seed = self._prepare()
            (top,) = self._conn.execute("SELECT coalesce(max(id), 0) FROM users").fetchone()
            self._next = top + 1
            self._load_index(top)
        except sqlite3.Error as exc:
            self._conn.close()
            raise classify(exc, path) from exc
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- opening ----------------------------------------------------------------------------

    def _prepare(self) -> int:
        """Create or upgrade the tables; return the dictionary's hash seed."""
        conn = self._conn
        sqlite_utils.Database(conn).table("users").create(
            {"id": int, "name": str}, pk="id", not_null={"name"}, if_not_exists=True)
        with immediate(conn, self.path):
            conn.execute("CREATE TABLE IF NOT EXISTS users_meta "
                         "(key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            row = conn.execute("SELECT value FROM users_meta WHERE key = 'seed'").fetchone()
            if row is None:
                seed = secrets.randbits(63)
                conn.execute("INSERT INTO users_meta VALUES ('seed', ?)", (seed,))
            else:
                (seed,) = row
            # Format 1's name index: the runs replace it (rule 4).
            conn.execute("DROP INDEX IF EXISTS users_by_name")
        return int(seed)

    def _load_index(self, top: int) -> None:
        runs = self._agreeing(user_index.load_runs(self.index_dir, self._seed, top))
        indexed = runs[-1].last if runs else 0
        if top - indexed > self._tail_size:
            started = time.monotonic()
            log.info("user dictionary: indexing ids %d..%d", indexed + 1, top)
            while top - indexed > self._tail_size:
                ids, names = self._rows_after(indexed, _OPEN_CHUNK)
                entries = user_index.Entries.build(
                    ids, names, user_index.name_hashes(names, self._seed))
                # Read in id order: every row of indexed+1..ids[-1] is in this chunk.
                runs.append(user_index.write_entries(self.index_dir, self._seed, indexed + 1,
                                                     ids[-1], entries))
                indexed = ids[-1]
                runs = self._merged(runs)
            log.info("user dictionary: indexed in %.1f s", time.monotonic() - started)
        self._runs = runs
        ids, names = self._rows_after(indexed, None)
        self._remember(ids, names, user_index.name_hashes(names, self._seed))

    def _agreeing(self, runs: list[user_index.Run]) -> list[user_index.Run]:
        """The runs up to the first that disagrees with the table at a few of its ids (first,
        last, some between); the files of that one and of those after it are deleted, so
        their ranges are read again from the table. A run restored from another history of
        the table (the same seed and ids, other names: a backup of the index put back beside
        a table that went on from an older copy) would give a known name a second id. A
        spot check, not a proof: cheap enough for every open."""
        for k, run in enumerate(runs):
            step = max(1, (run.last - run.first) // _SPOT_CHECKS)
            ids = sorted({run.first, run.last, *range(run.first, run.last, step)})
            table = {uid: name.encode() for uid, name in self.names(ids)}
            for uid in ids:
                try:
                    indexed: bytes | None = run.name_at(uid)
                except KeyError:
                    indexed = None
                if table.get(uid) != indexed:
                    log.warning("user dictionary: index run %s disagrees with %s at id %d; "
                                "rebuilding the index from id %d", run.path.name, self.path,
                                uid, run.first)
                    for stale in runs[k:]:
                        user_index.remove(stale.path)
                    return runs[:k]
        return runs

    def _rows_after(self, after: int, limit: int | None) -> tuple[list[int], list[str]]:
        sql = "SELECT id, name FROM users WHERE id > ? ORDER BY id"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""),
                                  (after, limit) if limit else (after,)).fetchall()
        return [row[0] for row in rows], [row[1] for row in rows]

    # -- assigning --------------------------------------------------------------------------

    def assign(self, names: Iterable[str]) -> dict[str, int]:
        """Return the id of every name, creating and durably committing missing ones."""
        with self._lock:
            self._check_open()
            unique = list(dict.fromkeys(names))
            # C loops from here on (map, compress, dict): no Python loop per name.
            held = list(map(self._tail.get, unique))
            if None not in held:
                return dict(zip(unique, held, strict=True))  # type: ignore[arg-type]
            # Ids are >= 1: ``not`` marks the names the tail lacks, ``filter`` keeps the ids
            # of the others in the order ``compress`` gives their names.
            ids = dict(zip(itertools.compress(unique, held), filter(None, held), strict=True))
            rest = list(itertools.compress(unique, map(operator.not_, held)))
            hashes = user_index.name_hashes(rest, self._seed)
            found = self._find(rest, hashes)
            ids.update(found)
            if len(found) < len(rest):
                absent = np.fromiter(map(found.__contains__, rest), dtype=bool,
                                     count=len(rest))
                np.logical_not(absent, out=absent)
                ids.update(self._insert(list(itertools.compress(rest, absent)),
                                        hashes[absent]))
            return ids

    def _find(self, names: Sequence[str], hashes: user_index.Hashes) -> dict[str, int]:
        """The ids of those of ``names`` (distinct, none in the tail) the runs hold."""
        found: dict[str, int] = {}
        if self._runs:
            order = np.argsort(hashes)
            # Oldest (largest) runs first; a name found is not searched for again: it has
            # one id (rule 6), so no later run can hold it.
            for run in self._runs:
                settled = run.find(names, hashes, order, found)
                if len(settled):
                    order = np.delete(order, settled)
                    if not len(order):
                        break
        return found

    def _insert(self, names: list[str], hashes: user_index.Hashes) -> dict[str, int]:
        first = self._next
        last = first + len(names) - 1
        if last > MAX_UID:
            raise StorageError("user dictionary is full (2**32 ids)")
        uids = range(first, last + 1)
        # One statement for the batch, the rows made by SQLite's JSON reader in C: about half
        # the CPU of binding row by row. Its text values end at a NUL, which only that
        # escape can carry: such a batch goes row by row.
        # msgspec: the same JSON as json.dumps(ensure_ascii=False), several times faster.
        payload = msgspec.json.encode(names).decode()
        with immediate(self._conn, self.path):
            if "\\u0000" in payload:
                self._conn.executemany("INSERT INTO users(id, name) VALUES (?, ?)",
                                       zip(uids, names, strict=True))
            else:
                added = self._conn.execute(
                    "INSERT INTO users(id, name) SELECT key + ?, value FROM json_each(?)",
                    (first, payload)).rowcount
                if added != len(names):
                    raise StorageError(f"{self.path}: {added} of {len(names)} names inserted")
        self._next = last + 1
        self._remember(uids, names, hashes)
        return dict(zip(names, uids, strict=True))

    def _remember(self, ids: Sequence[int], names: Sequence[str],
                  hashes: user_index.Hashes) -> None:
        self._tail.update(zip(names, ids, strict=True))
        self._tail_names.extend(names)
        column = (np.arange(ids.start, ids.stop, dtype=np.uint64) if isinstance(ids, range)
                  else np.asarray(ids, dtype=np.uint64))
        self._tail_ids.frombytes(column.tobytes())
        self._tail_hashes.frombytes(hashes.astype(np.uint64).tobytes())

    # -- keeping the index ------------------------------------------------------------------

    def maintenance_due(self) -> bool:
        return (len(self._tail_names) >= self._tail_size
                or user_index.to_merge(self._runs, self._tail_size) > 0)

    def maintain(self, *, step: bool = False) -> None:
        """Write the tail as a run and merge runs until no merge is due (rule 5); with
        ``step``, do one thing only: write the tail if it is full, else one merge. Safe
        beside ``assign``."""
        with self._lock:
            self._check_open()
            count = len(self._tail_names)
            if step and count < self._tail_size:
                count = 0
            first = self._runs[-1].last + 1 if self._runs else 1
            if count:
                last = self._tail_ids[count - 1]
                ids = self._tail_ids[:count].tolist()
                names = self._tail_names[:count]
                hashes = np.array(self._tail_hashes[:count], dtype=np.uint64)
        if count:
            run = user_index.write_entries(self.index_dir, self._seed, first, last,
                                           user_index.Entries.build(ids, names, hashes))
            with self._lock:
                self._check_open()
                self._runs = [*self._runs, run]
                del self._tail_names[:count]
                del self._tail_ids[:count]
                del self._tail_hashes[:count]
                # Built anew from what assign added meanwhile (a few names): cheaper than
                # deleting the written ones one by one.
                self._tail = dict(zip(self._tail_names, self._tail_ids, strict=True))
            if step:
                return
        while True:
            runs = self._runs  # only maintain (one call at a time) replaces runs once open
            merging = user_index.to_merge(runs, self._tail_size)
            if not merging:
                return
            merged = user_index.merge(self.index_dir, self._seed, runs[-merging:])
            with self._lock:
                self._check_open()
                self._runs = [*runs[:-merging], merged]
            self._drop_unused(self._runs)
            if step:
                return

    def _merged(self, runs: list[user_index.Run]) -> list[user_index.Run]:
        while count := user_index.to_merge(runs, self._tail_size):
            runs = [*runs[:-count], user_index.merge(self.index_dir, self._seed, runs[-count:])]
            self._drop_unused(runs)
        return runs

    def _drop_unused(self, runs: list[user_index.Run]) -> None:
        # After the merged run is durable: a crash before this leaves both, and the next
        # open keeps the merged one (``user_index.load_runs``).
        keep = {run.path for run in runs}
        for path in self.index_dir.glob("users-*.run"):
            if path not in keep:
                user_index.remove(path)

    # -- reading ----------------------------------------------------------------------------

    def names(self, uids: Iterable[int]) -> Iterator[tuple[int, str]]:
        """``(id, name)`` pairs for the given ids (for export and verification)."""
        ids = list(uids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self._conn.execute(
                f"SELECT id, name FROM users WHERE id IN ({marks})", chunk
            )

    def integrity_problems(self) -> list[str]:
        """What SQLite's ``integrity_check`` finds wrong with the file, and any name held
        under two ids (nothing in the file forbids it since it has no name index; the runs
        rely on there being none). Empty: nothing."""
        problems = integrity_problems(self._conn)
        for name, count in self._conn.execute(
                "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1 LIMIT 5"):
            problems.append(f"user {name!r} has {count} ids")
        return problems

    @property
    def indexed(self) -> int:
        """Ids up to this one are in runs; those above in the tail."""
        return self._runs[-1].last if self._runs else 0

    @property
    def issued(self) -> int:
        """Ids ``1..issued`` are committed in the table: found there on open or committed
        since (read without the lock: an int, set after each commit)."""
        return self._next - 1

    @property
    def seed(self) -> int:
        """The dictionary's hash seed: its identity (``users_meta``)."""
        return self._seed

    @property
    def tail_length(self) -> int:
        return len(self._tail_names)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: user dictionary closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._runs = []
        try:
            if not self._readonly:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        finally:
            self._conn.close()

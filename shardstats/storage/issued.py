"""The user dictionary's high-water mark (``users.issued``) and the start-up check it serves.

Journals store events by user id, and ``users.sqlite`` says which user each id is. Put back
alone from an older backup while the journals went on, ``users.sqlite`` would hand the ids its
copy lacks to new users, ids the journals already give to others: unique users silently
undercounted. The mark turns that into a refusal to start. Rules:

1. The mark holds the dictionary's hash seed (its identity: created once with the file) and a
   number of ids ``n`` such that ids ``1..n`` were durable in ``users.sqlite`` before the mark
   was written: the writer takes ``n`` from ids already committed, fsyncs ``users.sqlite`` and
   its ``-wal`` (ids found on open may come from a killed process's unsynced write), then
   replaces the mark atomically (temporary file, fsync, rename, fsync of the directory). So a
   ``users.sqlite`` that lost nothing always holds at least ``n`` ids, whatever the moment of
   a crash: a mark above the dictionary is never a false alarm (short of a disk whose fsync
   lies, which the durability promise excludes anyway).
2. It is written from time to time after new ids (off the request path) and at a clean stop,
   so it may lag: a lag only narrows what is caught, it never raises an alarm.
3. At start, before any id is assigned, with the data-dir lock held: the dictionary's seed
   must be the mark's and its count at least the mark's. A second check needs no mark (data
   directories of earlier builds have none): every id in a journal was committed in the
   dictionary first, so the newest journals' last blocks may hold no id above the dictionary's
   count. Either failure is a refusal naming the files; with no journal at all nothing can be
   undercounted, and a mark that no longer fits is dropped instead.
4. A mark that does not parse (a hand edit; never a torn write, see 1) is ignored with a
   warning and replaced by the next write; a temporary file a crash left is never read.

Blocking: call from worker threads.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shardstats.errors import DictionaryBehind
from shardstats.storage.journal import Journal
from shardstats.storage.sqlite import classify, connect

log = logging.getLogger(__name__)

MAGIC = "shardstats users.issued 1"
NEWEST_JOURNALS = 3  # journals, by last write, whose last events are compared (rule 3)
TAIL_EVENTS = 50_000  # events at the end of each of them


@dataclass(frozen=True)
class Mark:
    seed: int  # the dictionary's hash seed (``users_meta``): which dictionary it is
    ids: int  # ids 1..ids were durable in users.sqlite when the mark was written


@dataclass(frozen=True)
class DictionaryState:
    seed: int | None  # None: a file of an earlier build (no users_meta)
    ids: int


def encode(mark: Mark) -> bytes:
    body = f"{MAGIC}\nseed {mark.seed}\nids {mark.ids}\n"
    return f"{body}crc {zlib.crc32(body.encode()):08x}\n".encode()


def decode(data: bytes) -> Mark:
    """The mark a file holds; ``ValueError`` when it is not one, whole."""
    text = data.decode("ascii")
    body, sep, last = text.rstrip("\n").rpartition("\n")
    body += sep
    if last != f"crc {zlib.crc32(body.encode()):08x}" or not text.endswith("\n"):
        raise ValueError("bad checksum")
    magic, seed, ids = body.splitlines()
    fields = seed.split(" "), ids.split(" ")
    if magic != MAGIC or [f[0] for f in fields] != ["seed", "ids"] or any(
            len(f) != 2 or not f[1].isdigit() for f in fields):
        raise ValueError("not a users.issued mark")
    return Mark(int(fields[0][1]), int(fields[1][1]))


def read_mark(path: Path) -> Mark | None:
    """The mark, or None when there is none or it does not parse (rule 4)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return decode(data)
    except ValueError as exc:  # UnicodeDecodeError too
        log.warning("%s is not a valid mark (%s): ignored; it is rewritten soon", path, exc)
        return None


def sync_files(paths: Iterable[Path]) -> None:
    """fsync each existing file (rule 1: what the mark counts must be on disk first)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def dictionary_state(users: Path) -> DictionaryState | None:
    """The seed and id count of ``users.sqlite`` (None: no such file), read without building
    its name index: two small queries on a read-only connection (it changes nothing, and
    sees what a running server committed)."""
    if not users.exists():
        return None
    conn = connect(users, create=False, readonly=True)
    try:
        (ids,) = conn.execute("SELECT coalesce(max(id), 0) FROM users").fetchone()
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = (conn.execute("SELECT value FROM users_meta WHERE key = 'seed'").fetchone()
               if "users_meta" in tables else None)
    except sqlite3.Error as exc:
        raise classify(exc, users) from exc
    finally:
        conn.close()
    return DictionaryState(None if row is None else int(row[0]), int(ids))


def newest_uid(journal: Journal, events: int = TAIL_EVENTS) -> int:
    """The highest user id among about the last ``events`` events of a journal (0: none)."""
    top = 0
    for block in journal.blocks_after(max(0, journal.max_seq() - events)):
        if block.uids:
            top = max(top, max(block.uids))
    return top


def mark_problem(mark: Mark | None, state: DictionaryState | None, users: Path,
                 mark_path: Path) -> str | None:
    """Why the dictionary cannot be the one the mark was written for (None: it can)."""
    if mark is None:
        return None
    if state is None:
        return (f"{users} is missing, but {mark_path} records that it held {mark.ids} user "
                "ids")
    if state.seed != mark.seed:
        return (f"{users} is not the user dictionary {mark_path} was written for (another "
                "seed): it was replaced by another data directory's or a recreated one")
    if state.ids < mark.ids:
        return (f"{users} holds {state.ids} user ids, but {mark_path} records that it "
                f"held {mark.ids}: it was put back from an older backup")
    return None


def journal_problem(hour_uids: dict[Path, int], state: DictionaryState | None,
                    users: Path) -> str | None:
    """Why journals that carry these highest ids cannot go with this dictionary."""
    held = 0 if state is None else state.ids
    for path, uid in sorted(hour_uids.items(), key=lambda item: -item[1]):
        if uid > held:
            return (f"{path} holds events of user id {uid}, but {users} holds only {held} "
                    "ids: the dictionary is older than the journals (put back from an older "
                    "backup, or replaced)")
    return None


def refusal(problem: str, data_dir: Path) -> DictionaryBehind:
    return DictionaryBehind(
        f"{problem}. Starting would give ids the journals already use to other users, and "
        "unique users would be undercounted, so the server does not start (nothing was "
        f"changed). Restore {data_dir} as a whole from one backup (users.sqlite together with "
        "its journals), or put back the newest copy of users.sqlite; `shardstats verify` "
        "lists the hours whose users disagree with the dictionary")

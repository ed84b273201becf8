"""What the operator tools share: hour selection, ISO names, the dictionary check, file
sizes."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shardstats.core.events import HOUR_MS
from shardstats.errors import InvalidInput
from shardstats.storage.datadir import DataDir
from shardstats.storage.journal import Journal


def hour_iso(hour: int) -> str:
    try:
        moment = dt.datetime.fromtimestamp(hour * 3600, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"hour {hour}"
    return moment.strftime("%Y-%m-%dT%H:00Z")


def parse_time(text: str) -> int:
    """A time as epoch milliseconds (digits) or ISO 8601 (UTC unless it says otherwise)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{text!r} is neither epoch milliseconds nor an ISO time like 2026-11-27T14:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def parse_hour(text: str) -> int:
    """``--hour``: an hour number (timestamp // 3600000) or an ISO time inside the hour."""
    if text.isascii() and text.isdigit() and len(text) < 10:
        return int(text)
    return parse_time(text) // HOUR_MS


_DURATION = re.compile(r"^(\d+)([dh])$")


def parse_age_hours(text: str) -> int:
    """``90d`` or ``36h`` as a number of hours."""
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInput(f"{text!r} is not a duration like 90d or 36h")
    count, unit = int(match.group(1)), match.group(2)
    return count * 24 if unit == "d" else count


def select_hours(
    datadir: DataDir,
    hour: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[int]:
    """Hours with a journal, filtered by ``--hour`` or ``--from``/``--to`` (inclusive)."""
    hours = sorted(datadir.journal_hours())
    if hour is not None:
        return [h for h in hours if h == hour]
    low = None if start_ms is None else start_ms // HOUR_MS
    high = None if end_ms is None else end_ms // HOUR_MS
    return [h for h in hours if (low is None or h >= low) and (high is None or h <= high)]


@dataclass(frozen=True)
class DictionaryCheck:
    missing: int  # events whose user id the dictionary lacks
    renamed: int  # events whose user string (where kept) the dictionary names differently
    named: int  # events whose user string the journal still holds


def dictionary_disagreements(journal: Journal, datadir: DataDir) -> DictionaryCheck:
    """Check every event's user id against the dictionary (and its user string, where the
    journal still holds it)."""
    pairs: Counter[tuple[int, str]] = Counter()
    for block in journal.blocks_after(0, full=True):
        pairs.update(zip(block.uids, block.users or [""] * len(block.uids), strict=True))
    with datadir.open_users(readonly=True) as store:
        names = dict(store.names({uid for uid, _ in pairs}))
    missing = renamed = named = 0
    for (uid, user), count in pairs.items():
        if user:
            named += count
        if uid not in names:
            missing += count
        elif user and names[uid] != user:
            renamed += count
    return DictionaryCheck(missing, renamed, named)


def size_of(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total

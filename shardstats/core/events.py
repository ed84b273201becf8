"""Value types of the domain: events, hours and the counts a query answers.

An *hour* is the integer ``timestamp_ms // 3_600_000``: UTC by construction, whatever
the server's time zone, because Unix time has no zone.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

HOUR_MS = 3_600_000
MAX_TIMESTAMP_MS = 2**63 - 1  # SQLite INTEGER is a signed 64-bit value


class EventKind(enum.IntEnum):
    """Stored as its integer value in journals: never renumber."""

    CLICK = 1
    IMPRESSION = 2

    @classmethod
    def parse(cls, text: str) -> EventKind | None:
        return _KIND_BY_NAME.get(text)


_KIND_BY_NAME = {"click": EventKind.CLICK, "impression": EventKind.IMPRESSION}


def hour_of(timestamp_ms: int) -> int:
    return timestamp_ms // HOUR_MS


def hour_start_ms(hour: int) -> int:
    return hour * HOUR_MS


class Event(NamedTuple):
    """One validated click or impression. A NamedTuple, not a dataclass: batch ingest builds
    hundreds of thousands per second, and a frozen dataclass costs three times as much."""

    timestamp_ms: int
    user: str
    kind: EventKind
    id: str | None = None  # optional client event id: a retry with the same id counts once

    @property
    def hour(self) -> int:
        return self.timestamp_ms // HOUR_MS


@dataclass(slots=True)
class EventColumns:
    """Validated events as parallel columns: ``timestamps[i]``, ``users[i]``, ``kinds[i]``
    (an ``EventKind`` value) and ``ids[i]`` are event i. Batches travel from the parser to the
    journal in this form: a few lists instead of one object per event, which is most of what a
    batch of 10,000 events used to cost (allocation and the garbage collector walking it).
    ``ids`` is None when no event carries an id (the common case)."""

    timestamps: list[int]
    users: list[str]
    kinds: list[int]
    ids: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if len(self.users) != n or len(self.kinds) != n or (self.ids is not None
                                                            and len(self.ids) != n):
            raise ValueError("event columns must have the same length")

    def __len__(self) -> int:
        return len(self.timestamps)

    @classmethod
    def of(cls, events: Iterable[Event]) -> EventColumns:
        listed = list(events)
        ids = [e.id for e in listed]
        return cls([e.timestamp_ms for e in listed], [e.user for e in listed],
                   [int(e.kind) for e in listed], None if ids.count(None) == len(ids) else ids)

    @classmethod
    def concat(cls, parts: Sequence[EventColumns]) -> EventColumns:
        if len(parts) == 1:
            return parts[0]
        out = cls([], [], [], None)
        if any(part.ids is not None for part in parts):
            out.ids = []
        for part in parts:
            out.timestamps += part.timestamps
            out.users += part.users
            out.kinds += part.kinds
            if out.ids is not None:
                out.ids += part.ids if part.ids is not None else [None] * len(part)
        return out

    def chunks(self, size: int) -> list[EventColumns]:
        """The events cut into consecutive pieces of at most ``size`` (one when it fits)."""
        if len(self) <= size:
            return [self]
        ts, users, kinds, ids = self.timestamps, self.users, self.kinds, self.ids
        return [EventColumns(ts[i:i + size], users[i:i + size], kinds[i:i + size],
                             None if ids is None else ids[i:i + size])
                for i in range(0, len(ts), size)]

    def select(self, indices: Sequence[int]) -> EventColumns:
        """The events at ``indices``, in that order."""
        ts, users, kinds, ids = self.timestamps, self.users, self.kinds, self.ids
        return EventColumns([ts[i] for i in indices], [users[i] for i in indices],
                            [kinds[i] for i in indices],
                            None if ids is None else [ids[i] for i in indices])

    def by_hour(self) -> dict[int, EventColumns]:
        """The events grouped by hour (each group in the original order)."""
        ts = self.timestamps
        if not ts:
            return {}
        first, last = min(ts) // HOUR_MS, max(ts) // HOUR_MS
        if first == last:  # the common case: one hour, no regrouping
            return {first: self}
        groups: dict[int, list[int]] = {}
        for i, timestamp in enumerate(ts):
            groups.setdefault(timestamp // HOUR_MS, []).append(i)
        return {hour: self.select(indices) for hour, indices in groups.items()}

    def events(self) -> list[Event]:
        ids = self.ids if self.ids is not None else [None] * len(self)
        return [Event(t, u, EventKind(k), i)
                for t, u, k, i in zip(self.timestamps, self.users, self.kinds, ids, strict=True)]


@dataclass(frozen=True, slots=True)
class HourCounts:
    """What ``GET /analytics`` answers for one hour."""

    unique_users: int = 0
    clicks: int = 0
    impressions: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "unique_users": self.unique_users,
            "clicks": self.clicks,
            "impressions": self.impressions,
        }


ZERO_COUNTS = HourCounts()

"""Value types of the domain: events, hours and the counts a query answers.

An *hour* is the integer ``timestamp_ms // 3_600_000``: UTC by construction, whatever
the server's time zone, because Unix time has no zone.
"""

from __future__ import annotations

import enum
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

"""Range queries: exact totals and a per-step series over many hours.

``unique_users`` over a range is the size of the *union* of the hourly bitmaps — exact, and
different from the sum of hourly uniques (a user active in two hours counts once). A day is a
UTC day: hours ``24*d .. 24*d+23``. Pure: the caller supplies the hours' aggregates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyroaring import BitMap

from shardstats.core.aggregate import HourAggregate
from shardstats.core.events import HOUR_MS, HourCounts
from shardstats.core.validation import parse_query_fields, parse_timestamp_text
from shardstats.errors import Field, InvalidInput, Reason

STEPS = ("hour", "day")


@dataclass(frozen=True, slots=True)
class RangeQuery:
    first_hour: int
    last_hour: int  # inclusive
    step: str

    @property
    def hours(self) -> range:
        return range(self.first_hour, self.last_hour + 1)

    def segments(self) -> list[range]:
        """The hours of each step, clipped to the range."""
        if self.step == "hour":
            return [range(h, h + 1) for h in self.hours]
        out = []
        hour = self.first_hour
        while hour <= self.last_hour:
            day_end = (hour // 24 + 1) * 24
            end = min(day_end, self.last_hour + 1)
            out.append(range(hour, end))
            hour = end
        return out


def range_from_query(raw: bytes, max_hours: int) -> RangeQuery:
    params = parse_query_fields(raw, frozenset({"from", "to", "step"}))
    for name in (Field.FROM, Field.TO):
        if name not in params:
            raise InvalidInput(f"missing parameter '{name}'", name, Reason.MISSING)
    start = parse_timestamp_text(params["from"], "from")
    end = parse_timestamp_text(params["to"], "to")
    if end < start:
        raise InvalidInput("'to' is before 'from'", Field.TO, Reason.OUT_OF_ORDER)
    step = params.get("step", "hour")
    if step not in STEPS:
        raise InvalidInput("step must be 'hour' or 'day'", Field.STEP, Reason.UNKNOWN_VALUE)
    first, last = start // HOUR_MS, end // HOUR_MS
    if last - first + 1 > max_hours:
        raise InvalidInput(f"range covers {last - first + 1} hours; the maximum is {max_hours}",
                           Field.TO, Reason.TOO_LARGE)
    return RangeQuery(first, last, step)


@dataclass(frozen=True, slots=True)
class Segment:
    first_hour: int
    counts: HourCounts

    def as_json(self) -> dict[str, int]:
        return {"start": self.first_hour * HOUR_MS, **self.counts.as_json()}


def combine(aggregates: Sequence[HourAggregate | None]) -> tuple[HourCounts, BitMap]:
    """Exact counts of several hours together, and their user union (for further merging)."""
    present = [a for a in aggregates if a is not None]
    users = BitMap.union(*(a.users for a in present)) if present else BitMap()
    clicks = sum(a.clicks for a in present)
    impressions = sum(a.impressions for a in present)
    return HourCounts(len(users), clicks, impressions), users

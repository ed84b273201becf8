"""Range queries (``GET /analytics/range``) without I/O: targets, answers, the exact expectation.

``unique_users`` over a range is the size of the union of the hours' user sets; a ``day``
step is a UTC day (hours ``24d .. 24d+23``, clipped to the range). What the server should
answer follows from the ledger when every event sent to those hours was acknowledged and the
hours held nothing before the run; ``expected_range`` computes it, ``compare_range`` lists the
differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyroaring import BitMap

from tools.loadgen.ledger import Counts, Ledger
from tools.loadgen.workload import HOUR_MS

RANGE_PATH = "/analytics/range"
STEPS = ("hour", "day")


def range_target(first_hour: int, last_hour: int, step: str = "hour") -> str:
    """From the first millisecond of ``first_hour`` to the last one of ``last_hour``."""
    if step not in STEPS:
        raise ValueError(f"step must be one of {STEPS}")
    if last_hour < first_hour:
        raise ValueError("last_hour is before first_hour")
    return (f"{RANGE_PATH}?from={first_hour * HOUR_MS}&to={(last_hour + 1) * HOUR_MS - 1}"
            f"&step={step}")


def segments(first_hour: int, last_hour: int, step: str) -> list[range]:
    """The hours of each step of the series."""
    if step == "hour":
        return [range(h, h + 1) for h in range(first_hour, last_hour + 1)]
    if step != "day":
        raise ValueError(f"step must be one of {STEPS}")
    out = []
    hour = first_hour
    while hour <= last_hour:
        end = min((hour // 24 + 1) * 24, last_hour + 1)
        out.append(range(hour, end))
        hour = end
    return out


@dataclass(frozen=True)
class RangeAnswer:
    total: Counts
    series: tuple[tuple[int, Counts], ...]  # (start in ms, counts) per step

    @classmethod
    def from_json(cls, data: object) -> RangeAnswer:
        """Parse a decoded range answer; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {data!r:.80}")
        series = data.get("series")
        if not isinstance(series, list):
            raise ValueError("no 'series' list")
        steps = []
        for item in series:
            if not isinstance(item, dict):
                raise ValueError(f"series item {item!r:.60} is not an object")
            start = item.get("start")
            if not isinstance(start, int) or isinstance(start, bool):
                raise ValueError(f"series item has start {start!r:.40}")
            steps.append((start, Counts.from_json(item)))
        return cls(Counts.from_json(data.get("total")), tuple(steps))


def expected_range(ledger: Ledger, first_hour: int, last_hour: int, step: str,
                   baseline: Mapping[int, Counts] | None = None) -> RangeAnswer | None:
    """The exact answer the ledger implies, or None if it implies none: some event of those
    hours was not acknowledged, or an hour held events before the run (``baseline``)."""
    baseline = baseline or {}
    for hour in range(first_hour, last_hour + 1):
        if baseline.get(hour, Counts()) != Counts():
            return None
        entry = ledger.hours.get(hour)
        if entry is not None and entry.unacknowledged:
            return None
    series = []
    every = BitMap()
    clicks = impressions = 0
    for hours in segments(first_hour, last_hour, step):
        users = BitMap()
        c = i = 0
        for hour in hours:
            entry = ledger.hours.get(hour)
            if entry is None:
                continue
            users |= entry.acknowledged.users
            c += entry.acknowledged.clicks
            i += entry.acknowledged.impressions
        series.append((hours.start * HOUR_MS, Counts(len(users), c, i)))
        every |= users
        clicks += c
        impressions += i
    return RangeAnswer(Counts(len(every), clicks, impressions), tuple(series))


def compare_range(expected: RangeAnswer, observed: RangeAnswer, limit: int = 5) -> list[str]:
    """Differences between two answers (at most ``limit`` series items listed)."""
    problems = []
    if observed.total != expected.total:
        problems.append(f"total: server says {observed.total}, expected {expected.total}")
    if len(observed.series) != len(expected.series):
        problems.append(f"series: server gives {len(observed.series)} steps, expected "
                        f"{len(expected.series)}")
        return problems
    wrong = [(e, o) for e, o in zip(expected.series, observed.series, strict=True) if e != o]
    for (start, counts), (o_start, o_counts) in wrong[:limit]:
        problems.append(f"step at {start}: server says {o_start}: {o_counts}, expected "
                        f"{counts}")
    if len(wrong) > limit:
        problems.append(f"... and {len(wrong) - limit} more steps differ")
    return problems

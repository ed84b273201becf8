"""A plain-Python reference model of hourly aggregates: dict of sets and counters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from shardstats.core.events import Event, EventKind, HourCounts


@dataclass
class HourModel:
    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0

    def counts(self) -> HourCounts:
        return HourCounts(len(self.users), self.clicks, self.impressions)


class Model:
    def __init__(self) -> None:
        self.hours: defaultdict[int, HourModel] = defaultdict(HourModel)

    def add(self, event: Event) -> None:
        hour = self.hours[event.hour]
        hour.users.add(event.user)
        if event.kind == EventKind.CLICK:
            hour.clicks += 1
        else:
            hour.impressions += 1

    def add_all(self, events: Iterable[Event]) -> Model:
        for event in events:
            self.add(event)
        return self

    def counts(self, hour: int) -> HourCounts:
        model = self.hours.get(hour)
        return model.counts() if model else HourCounts()

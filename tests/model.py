"""The plain reference model of hourly aggregates: every event it is given is counted.

It is the one ledger (``tools.loadgen.ledger``) with every event sent and acknowledged, so its
two bounds meet and ``counts(hour)`` is the exact answer. It is a plain ledger: users are kept
as themselves in Python sets, not as dictionary ids in roaring bitmaps as the server keeps
them. Event ids are not looked at: a test that delivers an event twice adds it once.
"""

from __future__ import annotations

from collections.abc import Iterable

from shardstats.core.events import Event, EventKind, HourCounts
from tools.loadgen.ledger import Ledger


class Model(Ledger):
    def __init__(self) -> None:
        super().__init__(plain=True)

    def add(self, event: Event) -> None:
        self.sent()
        self.settle(event.hour, event.user, event.kind is EventKind.CLICK, acknowledged=True)

    def add_all(self, events: Iterable[Event]) -> Model:
        for event in events:
            self.add(event)
        return self

    def counts(self, hour: int) -> HourCounts:
        entry = self.hours.get(hour)
        if entry is None:
            return HourCounts()
        counts = entry.acknowledged.counts()
        return HourCounts(counts.unique_users, counts.clicks, counts.impressions)

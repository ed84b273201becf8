"""The aggregate of one hour: counters plus a roaring bitmap of dense user ids.

Rules:
1. An aggregate only ever moves forward: ``apply`` takes journal rows in increasing ``seq``
   order and ignores rows at or below ``last_seq`` (so replaying an overlapping journal tail
   is harmless).
2. ``unique_users`` is ``len(users)``; the bitmap holds the dense uint32 ids of every user with
   any event in the hour.
3. Two aggregates of disjoint event sets merge exactly (counters add, bitmaps union): the door
   for several nodes owning partitions of users.
4. A frozen aggregate never changes again (``apply`` raises): it can be handed to any number
   of readers, across awaits and threads, as one consistent view. ``copy()`` gives a mutable
   one; ``view()`` gives a frozen one (itself when already frozen).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pyroaring import BitMap

from shardstats.core.events import EventKind, HourCounts

JournalRow = tuple[int, int, int]
"""One committed event as the journal stores it: ``(seq, uid, kind)``; plain tuples because
replay folds millions of them."""


@dataclass(slots=True)
class HourAggregate:
    hour: int
    clicks: int = 0
    impressions: int = 0
    users: BitMap = field(default_factory=BitMap)
    last_seq: int = 0
    frozen: bool = field(default=False, compare=False, repr=False)

    def freeze(self) -> HourAggregate:
        self.frozen = True
        return self

    def view(self) -> HourAggregate:
        """A consistent, immutable view: itself if frozen, else a frozen copy."""
        return self if self.frozen else self.copy().freeze()

    def _check_mutable(self) -> None:
        if self.frozen:
            raise RuntimeError(f"hour {self.hour}: a frozen aggregate was about to change")

    def apply(self, rows: Iterable[JournalRow]) -> int:
        """Fold rows newer than ``last_seq`` in; return how many were applied."""
        self._check_mutable()
        applied = 0
        clicks = impressions = 0
        last = self.last_seq
        new_ids = []
        for seq, uid, kind in rows:
            if seq <= last:
                continue
            last = seq
            new_ids.append(uid)
            if kind == EventKind.CLICK:
                clicks += 1
            else:
                impressions += 1
            applied += 1
        if applied:
            self.users.update(new_ids)
            self.clicks += clicks
            self.impressions += impressions
            self.last_seq = last
        return applied

    def apply_block(self, first_seq: int, uids: list[int], kinds: list[int]) -> int:
        """``apply`` for consecutive rows ``first_seq, first_seq+1, ...`` given as columns:
        what a group commit produces, folded without a per-row Python loop."""
        self._check_mutable()
        skip = max(0, self.last_seq + 1 - first_seq)
        if skip:
            uids, kinds = uids[skip:], kinds[skip:]
        if not uids:
            return 0
        clicks = kinds.count(EventKind.CLICK)
        self.users.update(uids)
        self.clicks += clicks
        self.impressions += len(kinds) - clicks
        self.last_seq = first_seq + skip + len(uids) - 1
        return len(uids)

    def counts(self) -> HourCounts:
        return HourCounts(len(self.users), self.clicks, self.impressions)

    @property
    def events(self) -> int:
        return self.clicks + self.impressions

    def merged(self, other: HourAggregate) -> HourAggregate:
        """Exact merge of aggregates over disjoint events of the same hour."""
        if other.hour != self.hour:
            raise ValueError("cannot merge aggregates of different hours")
        return HourAggregate(
            hour=self.hour,
            clicks=self.clicks + other.clicks,
            impressions=self.impressions + other.impressions,
            users=self.users | other.users,
            last_seq=max(self.last_seq, other.last_seq),
        )

    def copy(self) -> HourAggregate:
        return HourAggregate(
            self.hour, self.clicks, self.impressions, BitMap(self.users), self.last_seq
        )

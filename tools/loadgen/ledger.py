"""The ledger of sent, acknowledged and counted events, and the one read-back check. No I/O.

For every hour it is told about, the ledger keeps two tallies (clicks, impressions and the set
of users): events *sent* (they left the client: each may have been stored) and events
*acknowledged* (a 204, or a batch line answered ``accepted``: each must be stored). Every
acknowledged event was sent. Read back with ``baseline`` the hour's counts before the run (zero
on a fresh server), every field (clicks, impressions; unique users likewise, from the sets):

    baseline + acknowledged  <=  counted  <=  baseline + sent

Below the lower bound the server **lost** acknowledged events; above the upper bound it
**invented** events. When nothing failed the bounds meet and the answer must be exact.
``check`` (a whole ledger) and ``check_hour`` (one hour, mid-run) are the one place that says so.

Two ways to file an event, into the same two tallies:

- ``settle(hour, user, click, acknowledged)`` once its outcome is known (the load generator;
  it also counts events in flight: ``sent(n)`` before, ``refused(n)`` for events the server
  refused outright, which were certainly not stored and widen no bound);
- ``record_sent(event)`` before it leaves and ``record_acked(event)`` when acknowledged, where
  bounds are read while events are in flight or a kill leaves outcomes unknown (the e2e tests,
  the soak). With an event id (``eid``), an event is filed once however often it is sent again
  (the server counts an id once).

Unique users add up only if the run's users are new to the hour, which is why the load
generator names its users with a per-run prefix. Users are integer ranks (0 .. 2**32-1, the
load generator's) or strings (interned to ranks here); one ledger takes one kind. The user sets
are roaring bitmaps of ranks, so a ledger of millions of users per hour stays small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from pyroaring import BitMap

from tools.loadgen.workload import HOUR_MS


class Filed(Protocol):
    """What the ledger needs of an event (``Event``, the load generator's ``PlannedEvent``)."""

    @property
    def hour(self) -> int: ...
    @property
    def user(self) -> int | str: ...
    @property
    def click(self) -> bool: ...


class Event(NamedTuple):
    """One event as a client sends it: ``(timestamp_ms, user, "click" | "impression")``."""

    timestamp: int
    user: str
    kind: str

    @property
    def hour(self) -> int:
        return self.timestamp // HOUR_MS

    @property
    def click(self) -> bool:
        return self.kind == "click"


@dataclass(frozen=True, slots=True)
class Counts:
    unique_users: int = 0
    clicks: int = 0
    impressions: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.unique_users + other.unique_users,
            self.clicks + other.clicks,
            self.impressions + other.impressions,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "unique_users": self.unique_users,
            "clicks": self.clicks,
            "impressions": self.impressions,
        }

    @classmethod
    def from_json(cls, data: object) -> Counts:
        """Parse a ``GET /analytics`` body (already JSON-decoded); raise ValueError if odd."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {data!r:.80}")
        values = []
        for key in ("unique_users", "clicks", "impressions"):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key} is {value!r:.40}, not a count")
            values.append(value)
        return cls(*values)


ZERO = Counts()
FIELDS = ("unique_users", "clicks", "impressions")


@dataclass
class Tally:
    clicks: int = 0
    impressions: int = 0
    users: Any = field(default_factory=BitMap)  # BitMap of ranks, or a set (plain ledger)

    def add(self, user: int | str, click: bool) -> None:
        if click:
            self.clicks += 1
        else:
            self.impressions += 1
        self.users.add(user)

    def add_many(self, users: Iterable[int], clicks: int, impressions: int) -> None:
        self.clicks += clicks
        self.impressions += impressions
        self.users.update(users)

    @property
    def events(self) -> int:
        return self.clicks + self.impressions

    def counts(self) -> Counts:
        return Counts(len(self.users), self.clicks, self.impressions)


@dataclass
class HourLedger:
    sent: Tally = field(default_factory=Tally)
    acknowledged: Tally = field(default_factory=Tally)

    @property
    def unacknowledged(self) -> int:
        """Events sent whose acknowledgement never came (they may or may not be stored)."""
        return self.sent.events - self.acknowledged.events

    def bounds(self, baseline: Counts) -> tuple[Counts, Counts]:
        return baseline + self.acknowledged.counts(), baseline + self.sent.counts()


def _first(seen: set[str], eid: str | None) -> bool:
    """Whether an event with id ``eid`` (None: no id) is filed now, the id remembered."""
    if eid is None:
        return True
    if eid in seen:
        return False
    seen.add(eid)
    return True


class Ledger:
    """Sent and acknowledged events per hour (see the module docstring). Not thread-safe."""

    def __init__(self, *, plain: bool = False) -> None:
        self.plain = plain
        self.hours: dict[int, HourLedger] = {}
        self.in_flight = 0
        self.statuses: Counter[int] = Counter()  # HTTP statuses seen, for failure messages
        self._names: dict[str, int] = {}
        self._ranked = False  # integer users were filed
        self._sent_ids: set[str] = set()
        self._acked_ids: set[str] = set()

    def _hour(self, hour: int) -> HourLedger:
        entry = self.hours.get(hour)
        if entry is None:
            entry = self.hours[hour] = (
                HourLedger(Tally(users=set()), Tally(users=set())) if self.plain else HourLedger()
            )
        return entry

    def _rank(self, user: int | str) -> int | str:
        if self.plain:
            return user
        if isinstance(user, int):
            self._ranked = True
            if self._names:
                raise TypeError("this ledger holds string users; got an integer")
            return user
        if self._ranked:
            raise TypeError("this ledger holds integer users; got a string")
        return self._names.setdefault(user, len(self._names))

    # -- outcome known: the load generator ------------------------------------------------

    def sent(self, events: int = 1) -> None:
        """``events`` left; their outcome (``settle``) comes later."""
        self.in_flight += events

    def settle(self, hour: int, user: int | str, click: bool, acknowledged: bool) -> None:
        self.in_flight -= 1
        entry = self._hour(hour)
        rank = self._rank(user)
        entry.sent.add(rank, click)
        if acknowledged:
            entry.acknowledged.add(rank, click)

    def settle_many(self, hour: int, users: Iterable[int], clicks: int, impressions: int,
                    acknowledged: bool) -> None:
        """``clicks + impressions`` events of one hour by ``users``, all with one outcome."""
        self.in_flight -= clicks + impressions
        self._ranked = True
        entry = self._hour(hour)
        users = BitMap(users)
        entry.sent.add_many(users, clicks, impressions)
        if acknowledged:
            entry.acknowledged.add_many(users, clicks, impressions)

    def refused(self, events: int = 1) -> None:
        """Events the server refused outright (rejected as invalid, or a 413 for the whole
        body): certainly not stored, so they widen no bound."""
        self.in_flight -= events

    # -- in two steps: e2e tests, soak ----------------------------------------------------

    def record_sent(self, event: Filed, eid: str | None = None) -> None:
        """Before the first byte leaves: from now on the event may be counted."""
        if _first(self._sent_ids, eid):
            self._hour(event.hour).sent.add(self._rank(event.user), event.click)

    def record_acked(self, event: Filed, eid: str | None = None) -> None:
        """The server acknowledged the event (``record_sent`` was called for it)."""
        if _first(self._acked_ids, eid):
            self._hour(event.hour).acknowledged.add(self._rank(event.user), event.click)

    # -- totals ---------------------------------------------------------------------------

    @property
    def acknowledged(self) -> int:
        return sum(h.acknowledged.events for h in self.hours.values())

    @property
    def unacknowledged(self) -> int:
        return sum(h.unacknowledged for h in self.hours.values())


@dataclass(frozen=True)
class HourCheck:
    hour: int
    observed: Counts
    low: Counts
    high: Counts
    lost: tuple[str, ...]
    invented: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.invented

    @property
    def exact(self) -> bool:
        return self.low == self.high

    def as_dict(self) -> dict[str, object]:
        return {
            "hour": self.hour,
            "observed": self.observed.as_dict(),
            "expected_at_least": self.low.as_dict(),
            "expected_at_most": self.high.as_dict(),
            "lost": list(self.lost),
            "invented": list(self.invented),
        }


@dataclass(frozen=True)
class CheckResult:
    hours: tuple[HourCheck, ...]
    acknowledged: int
    unacknowledged: int
    unreadable: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unreadable and all(h.ok for h in self.hours)

    @property
    def exact(self) -> bool:
        return all(h.exact for h in self.hours)

    @property
    def problems(self) -> list[str]:
        out = list(self.unreadable)
        for h in self.hours:
            out += [f"hour {h.hour}: LOST {p}" for p in h.lost]
            out += [f"hour {h.hour}: INVENTED {p}" for p in h.invented]
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "exact": self.exact,
            "hours_checked": len(self.hours),
            "acknowledged_events": self.acknowledged,
            "unacknowledged_events": self.unacknowledged,
            "problems": self.problems,
            "failed_hours": [h.as_dict() for h in self.hours if not h.ok],
        }


def check_hour(
    hour: int, entry: HourLedger | None, baseline: Counts, observed: Counts
) -> HourCheck:
    low, high = entry.bounds(baseline) if entry is not None else (baseline, baseline)
    return check_bounds(hour, low, high, observed)


def check_bounds(hour: int, low: Counts, high: Counts, observed: Counts) -> HourCheck:
    """``low <= observed <= high`` field by field (mid-run, ``low`` read before a GET and
    ``high`` after it: events acknowledged or sent meanwhile may or may not count)."""
    lost: list[str] = []
    invented: list[str] = []
    for name in FIELDS:
        seen, lo, hi = getattr(observed, name), getattr(low, name), getattr(high, name)
        if seen < lo:
            lost.append(f"{name}: server counts {seen}, at least {lo} were acknowledged "
                        f"({lo - seen} missing)")
        elif seen > hi:
            invented.append(f"{name}: server counts {seen}, at most {hi} were ever sent "
                            f"({seen - hi} extra)")
    return HourCheck(hour, observed, low, high, tuple(lost), tuple(invented))


def check(
    ledger: Ledger,
    observed: Mapping[int, Counts],
    baseline: Mapping[int, Counts] | None = None,
    also: Iterable[int] = (),
) -> CheckResult:
    """Compare every hour of the ledger (and ``also``, hours that must keep their baseline).

    An hour missing from ``observed`` could not be read back, and fails the check.
    """
    baseline = baseline or {}
    hours = sorted(set(ledger.hours) | set(also))
    results = []
    unreadable = []
    for hour in hours:
        if hour not in observed:
            unreadable.append(f"hour {hour}: could not be read back")
            continue
        results.append(
            check_hour(hour, ledger.hours.get(hour), baseline.get(hour, ZERO), observed[hour])
        )
    return CheckResult(tuple(results), ledger.acknowledged, ledger.unacknowledged,
                       tuple(unreadable))

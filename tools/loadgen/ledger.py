"""The read-back check: what the server says vs what it acknowledged, without I/O.

For every hour the run sent events to, the ledger keeps two tallies (clicks, impressions and
the set of user ids): events *acknowledged* (204) and events sent but *not acknowledged*
(an error status, a timeout, a broken connection: they may or may not have been stored).
After the run, with ``baseline`` the hour's counts before the run (zero on a fresh server):

    baseline + acknowledged  <=  counted  <=  baseline + everything sent

field by field (clicks, impressions; unique users likewise, using the user sets). Below the
lower bound the server **lost** acknowledged events; above the upper bound it **invented**
events. When nothing failed the two bounds meet and the answer must be exact.

Unique users add up only if the run's users are new to the hour, which is why the load
generator names its users with a per-run prefix. User sets are roaring bitmaps of the users'
integer ranks (0 .. 2**32-1), so a ledger of millions of users per hour stays small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyroaring import BitMap


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
    users: BitMap = field(default_factory=BitMap)

    def add(self, user: int, click: bool) -> None:
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


@dataclass
class HourLedger:
    acknowledged: Tally = field(default_factory=Tally)
    unacknowledged: Tally = field(default_factory=Tally)

    def bounds(self, baseline: Counts) -> tuple[Counts, Counts]:
        ack, unack = self.acknowledged, self.unacknowledged
        low = Counts(len(ack.users), ack.clicks, ack.impressions)
        high = Counts(
            len(ack.users | unack.users),
            ack.clicks + unack.clicks,
            ack.impressions + unack.impressions,
        )
        return baseline + low, baseline + high


class Ledger:
    """Outcome of every event sent, per hour. Call ``settle`` once per event."""

    def __init__(self) -> None:
        self.hours: dict[int, HourLedger] = {}
        self.in_flight = 0

    def sent(self, events: int = 1) -> None:
        self.in_flight += events

    def _hour(self, hour: int) -> HourLedger:
        entry = self.hours.get(hour)
        if entry is None:
            entry = self.hours[hour] = HourLedger()
        return entry

    def settle(self, hour: int, user: int, click: bool, acknowledged: bool) -> None:
        self.in_flight -= 1
        entry = self._hour(hour)
        (entry.acknowledged if acknowledged else entry.unacknowledged).add(user, click)

    def settle_many(self, hour: int, users: Iterable[int], clicks: int, impressions: int,
                    acknowledged: bool) -> None:
        """``clicks + impressions`` events of one hour by ``users``, all with one outcome."""
        self.in_flight -= clicks + impressions
        entry = self._hour(hour)
        (entry.acknowledged if acknowledged else entry.unacknowledged).add_many(
            users, clicks, impressions)

    def refused(self, events: int = 1) -> None:
        """Events the server refused outright (rejected as invalid, or a 413 for the whole
        body): certainly not stored, so they widen no bound."""
        self.in_flight -= events

    @property
    def acknowledged(self) -> int:
        return sum(h.acknowledged.events for h in self.hours.values())

    @property
    def unacknowledged(self) -> int:
        return sum(h.unacknowledged.events for h in self.hours.values())


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

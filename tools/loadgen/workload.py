"""The traffic model (about 95% of requests for the current hour, mostly in order; the rest
for past hours, fewer the further back), as pure functions of a seeded RNG and the time given.

- Hours: the current hour with probability ``1 - past_share`` (0.95), otherwise a past hour
  ``h`` in 1..``past_hours`` (48) with weight ``h ** -past_exponent`` (1.5): yesterday's hours
  are asked for far less often than the last one.
- Users: a Zipf-like law over a pool of ``users`` ids (rank ``k`` has weight ``(k+1) ** -s``).
- Event timestamps of the current hour: mostly in order (sent a few ms after they happened),
  a ``late_share`` of them late by an exponential delay (mean ``late_mean_ms``), so the
  stream is mostly, not strictly, ordered. Past-hour events are spread over their hour.
- Kinds: a click with probability ``click_share``, else an impression.

Nothing here reads a clock or does I/O: callers pass ``now_ms`` and an RNG.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate

HOUR_MS = 3_600_000


class RequestClass(enum.Enum):
    """What a latency sample is filed under."""

    POST = "POST"
    GET_CURRENT = "GET current"
    GET_PAST_COLD = "GET past cold"
    GET_PAST_WARM = "GET past warm"
    BATCH = "POST batch"
    RANGE_HOUR = "GET range hour"
    RANGE_DAY = "GET range day"


RANGE_CLASSES = (RequestClass.RANGE_HOUR, RequestClass.RANGE_DAY)


@dataclass(frozen=True)
class WorkloadConfig:
    users: int = 100_000
    zipf_s: float = 1.1
    past_share: float = 0.05
    past_hours: int = 48
    past_exponent: float = 1.5
    click_share: float = 0.1
    late_share: float = 0.05
    late_mean_ms: float = 2_000.0
    late_max_ms: int = 60_000
    jitter_ms: int = 20

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users must be at least 1")
        if self.past_hours < 1:
            raise ValueError("past_hours must be at least 1")
        for name in ("past_share", "click_share", "late_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.zipf_s < 0 or self.past_exponent < 0:
            raise ValueError("exponents must not be negative")
        if self.jitter_ms < 0 or self.late_mean_ms < 0 or self.late_max_ms < 0:
            raise ValueError("delays must not be negative")


def past_hour_weights(hours: int, exponent: float) -> list[float]:
    """Probability of each age 1..hours (index 0 is age 1), proportional to age**-exponent."""
    raw = [age**-exponent for age in range(1, hours + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class CumulativeSampler:
    """Draw an index with given weights: ``random.choices`` on cumulative weights computed
    once (a bisection per draw, O(log n))."""

    __slots__ = ("_cumulative", "_indices", "_total")

    def __init__(self, weights: Iterable[float]) -> None:
        self._cumulative = list(accumulate(weights))
        if not self._cumulative or self._cumulative[-1] <= 0:
            raise ValueError("weights must be non-empty with a positive sum")
        self._total = self._cumulative[-1]
        self._indices = range(len(self._cumulative))

    def sample(self, rng: random.Random) -> int:
        return self.sample_many(rng, 1)[0]

    def sample_many(self, rng: random.Random, n: int) -> list[int]:
        return rng.choices(self._indices, cum_weights=self._cumulative, k=n)


class ZipfSampler(CumulativeSampler):
    """User ranks 0..n-1; rank ``k`` has probability proportional to ``(k+1) ** -s``."""

    def __init__(self, n: int, s: float) -> None:
        super().__init__((k + 1) ** -s for k in range(n))
        self.s = s

    def probability(self, rank: int) -> float:
        return float((rank + 1) ** -self.s) / self._total


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    hour: int
    timestamp_ms: int
    user: int
    click: bool


@dataclass(frozen=True, slots=True)
class PlannedQuery:
    hour: int
    timestamp_ms: int


class Workload:
    """Draws the next POST or GET of the traffic model."""

    def __init__(self, config: WorkloadConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self._users = ZipfSampler(config.users, config.zipf_s)
        self._ages = CumulativeSampler(past_hour_weights(config.past_hours, config.past_exponent))

    def age(self) -> int:
        """0 for the current hour, else how many hours back."""
        if self.rng.random() >= self.config.past_share:
            return 0
        return 1 + self._ages.sample(self.rng)

    def delay_ms(self) -> int:
        """How long ago a current-hour event happened when it is sent."""
        cfg = self.config
        if self.rng.random() < cfg.late_share:
            return min(cfg.late_max_ms, int(self.rng.expovariate(1.0) * cfg.late_mean_ms))
        return self.rng.randint(0, cfg.jitter_ms)

    def post(self, now_ms: int) -> PlannedEvent:
        age = self.age()
        if age == 0:
            timestamp = max(0, now_ms - self.delay_ms())
        else:
            start = (now_ms // HOUR_MS - age) * HOUR_MS
            timestamp = start + self.rng.randrange(HOUR_MS)
        user = self._users.sample(self.rng)
        click = self.rng.random() < self.config.click_share
        return PlannedEvent(timestamp // HOUR_MS, timestamp, user, click)

    def get(self, now_ms: int) -> PlannedQuery:
        age = self.age()
        if age == 0:
            return PlannedQuery(now_ms // HOUR_MS, now_ms)
        start = (now_ms // HOUR_MS - age) * HOUR_MS
        timestamp = start + self.rng.randrange(HOUR_MS)
        return PlannedQuery(timestamp // HOUR_MS, timestamp)


class HourTemperature:
    """Files GETs under current / past cold / past warm.

    An hour is *cold* until this run has sent it any request (a POST loads the hour into the
    server as much as a GET does), so a past-hour GET is cold only if it is the first request
    for that hour since the server started — assuming the server was started just before the
    run (as ``tools/bench.py`` does) and nobody else talks to it. Hours known to be loaded
    already are passed as ``warm``.
    """

    def __init__(self, warm: Iterable[int] = ()) -> None:
        self._warm = set(warm)

    def touch(self, hour: int) -> None:
        self._warm.add(hour)

    def classify_get(self, hour: int, current_hour: int) -> RequestClass:
        if hour == current_hour:
            self._warm.add(hour)
            return RequestClass.GET_CURRENT
        if hour in self._warm:
            return RequestClass.GET_PAST_WARM
        self._warm.add(hour)
        return RequestClass.GET_PAST_COLD


def arrivals(
    rng: random.Random,
    post_rate: float,
    get_rate: float,
    duration: float,
    *,
    poisson: bool = True,
) -> Iterator[tuple[float, bool]]:
    """Open-loop send times: ``(seconds from start, is_get)`` up to ``duration``.

    Poisson: exponential gaps at the total rate, each arrival a GET with probability
    ``get_rate / total``. Uniform: evenly spaced at the total rate, GETs interleaved so that
    every prefix holds the right share of them.
    """
    if post_rate < 0 or get_rate < 0:
        raise ValueError("rates must not be negative")
    total = post_rate + get_rate
    if total <= 0 or duration <= 0:
        return
    get_share = get_rate / total
    if poisson:
        t = rng.expovariate(total)
        while t < duration:
            yield t, rng.random() < get_share
            t += rng.expovariate(total)
        return
    credit = 0.0
    for k in range(math.ceil(duration * total)):
        t = k / total
        if t >= duration:
            return
        credit += get_share
        is_get = credit >= 1.0 - 1e-9
        if is_get:
            credit -= 1.0
        yield t, is_get


# -- pre-population -------------------------------------------------------------------------


def coprime_stride(n: int) -> int:
    """A step near 0.618·n that is coprime with ``n``, so ``i*step % n`` permutes 0..n-1."""
    if n <= 2:
        return 1
    step = max(1, int(n * 0.6180339887))
    while math.gcd(step, n) != 1:
        step += 1
    return step


MASK64 = (1 << 64) - 1


def scatter_user(hour: int, i: int, pool: int) -> int:
    """A pseudo-random user in ``0 .. pool-1`` for event ``i`` of ``hour`` (a 64-bit mix of
    both, so different hours draw independently from the same pool)."""
    x = ((hour * 0x9E3779B97F4A7C15) ^ (i * 0xBF58476D1CE4E5B9)) & MASK64
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & MASK64
    x ^= x >> 29
    return x % pool


@dataclass(frozen=True)
class FillPlan:
    """``events`` events in ``hour``, spread in time order over the hour.

    Event ``i`` is a pure function of ``i``: its timestamp steps evenly through the first
    ``span_ms`` of the hour (the whole hour for a past one; up to "now" for the current one)
    and a fixed hash of ``i`` makes about ``click_share`` of the events clicks. Its user:

    - by default ``(i * stride) % users``: every user appears once in the first ``users``
      events, so the hour ends with exactly ``min(events, users)`` distinct users, the same
      users in every hour planned with the same ``users``;
    - with ``scatter``: a pseudo-random draw from a pool of ``users`` that differs from hour to
      hour (``scatter_user``), so hours overlap only partly and a range of hours holds many
      more distinct users than one hour (about ``users * (1 - exp(-events / users))`` per
      hour).
    """

    hour: int
    events: int
    users: int
    click_share: float = 0.1
    span_ms: int = HOUR_MS
    scatter: bool = False

    def __post_init__(self) -> None:
        if self.events < 0 or self.users < 1:
            raise ValueError("events must be >= 0 and users >= 1")
        if not 1 <= self.span_ms <= HOUR_MS:
            raise ValueError("span_ms must lie in 1..3600000")

    @property
    def stride(self) -> int:
        return coprime_stride(self.users)

    @property
    def distinct_users(self) -> int:
        """Exact for the default plan; an expectation (rounded) for a ``scatter`` one."""
        if self.scatter:
            return round(self.users * -math.expm1(-self.events / self.users))
        return min(self.events, self.users)

    def event(self, i: int, stride: int | None = None) -> PlannedEvent:
        step = self.stride if stride is None else stride
        offset = (i * self.span_ms) // self.events if self.events else 0
        timestamp = self.hour * HOUR_MS + offset
        user = (scatter_user(self.hour, i, self.users) if self.scatter
                else (i * step) % self.users)
        click = ((i * 0x9E3779B1) & 0xFFFFFFFF) < self.click_share * 2**32
        return PlannedEvent(self.hour, timestamp, user, click)

    def block(self, start: int, stop: int) -> tuple[list[int], list[int], list[bool]]:
        """Timestamps, users and click flags of events ``start .. stop-1``: the same as
        ``event(i)`` for each, computed in bulk (millions of events go through here)."""
        if not 0 <= start <= stop <= self.events:
            raise ValueError(f"block {start}..{stop} outside 0..{self.events}")
        span, n, base = self.span_ms, self.events, self.hour * HOUR_MS
        indices = range(start, stop)
        timestamps = [base + (i * span) // n for i in indices]
        pool = self.users
        if self.scatter:
            hour = self.hour
            users = [scatter_user(hour, i, pool) for i in indices]
        else:
            step = self.stride
            users = [(i * step) % pool for i in indices]
        threshold = self.click_share * 2**32
        clicks = [((i * 0x9E3779B1) & 0xFFFFFFFF) < threshold for i in indices]
        return timestamps, users, clicks

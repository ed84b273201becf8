"""Batch ingest (``POST /analytics/batch``) without I/O: chunks, bodies, verdicts, the ledger.

A batch body is newline-delimited JSON, one event a line::

    {"timestamp":1795802400000,"user":"lg1a2b3c4d-17","event":"click"}

and the answer (200) is ``{"accepted": a, "rejected": r, "failed": f, "results": [...]}``
with one verdict per body line: ``"accepted"`` (durable), ``"rejected: why"`` (invalid, not
stored), ``"failed: why"`` (not acknowledged: it may or may not have been stored) or
``"blank"`` for an empty line (a body that ends with a newline has one more, empty, line).

- ``plan_chunks`` cuts fill plans into request-sized pieces (several small hours may share a
  request); ``fill_chunk`` makes the body of one piece.
- ``BatchSource`` draws live traffic for the batch throughput scenario: current-hour events,
  mostly in order, users from a Zipf-like pool.
- ``parse_verdicts`` reads an answer strictly (a count or verdict that does not add up makes
  the whole answer unreadable, hence every event in it unacknowledged); ``settle`` files each
  line under the ledger's acknowledged or unacknowledged tallies, or nowhere if rejected.
"""

from __future__ import annotations

import enum
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tools.loadgen.ledger import Ledger
from tools.loadgen.workload import HOUR_MS, FillPlan, ZipfSampler

BATCH_PATH = "/analytics/batch"
KINDS = ("impression", "click")


def json_safe_prefix(prefix: str) -> str:
    """The user prefix as it goes between JSON quotes (escaped if it has to be)."""
    return json.dumps(prefix)[1:-1]


def encode_lines(prefix: str, timestamps: Sequence[int], users: Sequence[int],
                 clicks: Sequence[bool]) -> bytes:
    """NDJSON body, no trailing newline. ``prefix`` must already be JSON-safe."""
    kinds = KINDS
    return "\n".join([
        f'{{"timestamp":{t},"user":"{prefix}{u}","event":"{kinds[c]}"}}'
        for t, u, c in zip(timestamps, users, clicks, strict=True)
    ]).encode("utf-8")


# -- chunks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Piece:
    """Events ``start .. stop-1`` of ``plans[plan]``."""

    plan: int
    start: int
    stop: int

    @property
    def events(self) -> int:
        return self.stop - self.start


def plan_chunks(plans: Sequence[FillPlan], chunk_events: int,
                max_hours: int = 8) -> list[list[Piece]]:
    """Cut ``plans`` (in order) into chunks of at most ``chunk_events`` events and at most
    ``max_hours`` distinct plans each. A big plan spans several chunks; small consecutive ones
    share a chunk, so that filling many small hours does not cost a request per hour."""
    if chunk_events < 1 or max_hours < 1:
        raise ValueError("chunk_events and max_hours must be at least 1")
    chunks: list[list[Piece]] = []
    current: list[Piece] = []
    room = chunk_events
    for index, plan in enumerate(plans):
        position = 0
        while position < plan.events:
            if room == 0 or len(current) == max_hours:
                chunks.append(current)
                current, room = [], chunk_events
            take = min(room, plan.events - position)
            current.append(Piece(index, position, position + take))
            position += take
            room -= take
    if current:
        chunks.append(current)
    return chunks


@dataclass(slots=True)
class Chunk:
    """One request's events: per line its hour, user (rank) and kind, and the body.

    ``runs`` are ``(hour, first line, end line)``: maximal stretches of lines of one hour, so
    that an all-accepted answer is filed into the ledger a stretch at a time.
    """

    hours: list[int]
    users: list[int]
    clicks: list[bool]
    body: bytes
    runs: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not len(self.hours) == len(self.users) == len(self.clicks):
            raise ValueError("hours, users and clicks must have one entry per line")
        if not self.runs:
            self.runs = runs_of(self.hours)

    def __len__(self) -> int:
        return len(self.users)

    def split(self) -> tuple[Chunk, Chunk]:
        """Two halves (for a 413): bodies rebuilt from the lines, so each stays valid."""
        if len(self) < 2:
            raise ValueError("a one-line chunk cannot be split")
        lines = self.body.split(b"\n")
        if len(lines) != len(self):
            raise ValueError("body does not have one line per event")
        mid = len(self) // 2
        return (
            Chunk(self.hours[:mid], self.users[:mid], self.clicks[:mid],
                  b"\n".join(lines[:mid])),
            Chunk(self.hours[mid:], self.users[mid:], self.clicks[mid:],
                  b"\n".join(lines[mid:])),
        )


    def subset(self, lines: Sequence[int]) -> Chunk:
        """A new chunk of the given lines (0-based, ascending), e.g. those that failed."""
        body = self.body.split(b"\n")
        if len(body) != len(self):
            raise ValueError("body does not have one line per event")
        return Chunk([self.hours[i] for i in lines], [self.users[i] for i in lines],
                     [self.clicks[i] for i in lines], b"\n".join(body[i] for i in lines))


def runs_of(hours: Sequence[int]) -> list[tuple[int, int, int]]:
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(hours) + 1):
        if i == len(hours) or hours[i] != hours[start]:
            runs.append((hours[start], start, i))
            start = i
    return runs


def fill_chunk(plans: Sequence[FillPlan], pieces: Sequence[Piece], prefix: str) -> Chunk:
    """The body and ledger lines of one chunk of fill plans. ``prefix`` must be JSON-safe."""
    hours: list[int] = []
    users: list[int] = []
    clicks: list[bool] = []
    timestamps: list[int] = []
    runs = []
    for piece in pieces:
        plan = plans[piece.plan]
        ts, us, cs = plan.block(piece.start, piece.stop)
        runs.append((plan.hour, len(users), len(users) + len(us)))
        hours += [plan.hour] * len(us)
        timestamps += ts
        users += us
        clicks += cs
    return Chunk(hours, users, clicks, encode_lines(prefix, timestamps, users, clicks), runs)


class BatchSource:
    """Live batch traffic: events happening now (a few ms ago, ``late_share`` of them late by
    an exponential delay), users from a Zipf-like law over ``pool`` ranks (rank 0 most
    active), clicks with probability ``click_share``. Pure: time and RNG are passed in."""

    def __init__(self, rng: random.Random, pool: int, *, zipf_s: float = 1.1,
                 click_share: float = 0.1, late_share: float = 0.05,
                 late_mean_ms: float = 2_000.0, late_max_ms: int = 60_000,
                 jitter_ms: int = 20) -> None:
        if pool < 1:
            raise ValueError("pool must be at least 1")
        self.rng = rng
        self.pool = pool
        self._users = ZipfSampler(pool, zipf_s)
        self.click_share = click_share
        self.late_share = late_share
        self.late_mean_ms = late_mean_ms
        self.late_max_ms = late_max_ms
        self.jitter_ms = jitter_ms

    def chunk(self, now_ms: int, events: int, prefix: str) -> Chunk:
        rnd = self.rng.random
        users = self._users.sample_many(self.rng, events)
        late, mean, cap = self.late_share, self.late_mean_ms, self.late_max_ms
        jitter = self.jitter_ms + 1
        timestamps = []
        for _ in range(events):
            if rnd() < late:
                delay = min(cap, int(-math.log(1.0 - rnd()) * mean))
            else:
                delay = int(rnd() * jitter)
            timestamps.append(max(0, now_ms - delay))
        share = self.click_share
        clicks = [rnd() < share for _ in range(events)]
        hours = [t // HOUR_MS for t in timestamps]
        return Chunk(hours, users, clicks, encode_lines(prefix, timestamps, users, clicks))


# -- answers ---------------------------------------------------------------------------------


class Verdict(enum.IntEnum):
    ACCEPTED = 0
    REJECTED = 1
    FAILED = 2


@dataclass(frozen=True)
class Verdicts:
    """One verdict per event line, and the first reason given for each kind of refusal."""

    lines: list[Verdict]
    accepted: int
    rejected: int
    failed: int
    reasons: dict[str, str] = field(default_factory=dict)  # "rejected"/"failed" -> a reason

    @property
    def all_accepted(self) -> bool:
        return self.accepted == len(self.lines)


def parse_verdicts(body: bytes, lines: int) -> Verdicts:
    """Read a 200 answer to a batch of ``lines`` event lines; ValueError if it is not one.

    ``results`` must hold exactly ``lines`` verdicts, plus at most one ``"blank"`` (a body
    ending with a newline), and the three counts must agree with them.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"batch answer is not JSON: {body[:120]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"batch answer is not a JSON object: {body[:120]!r}")
    results = data.get("results")
    if not isinstance(results, list):
        raise ValueError("batch answer has no 'results' list")
    if len(results) == lines + 1 and results[-1] == "blank":
        results = results[:-1]
    if len(results) != lines:
        raise ValueError(f"batch answer has {len(results)} verdicts for {lines} lines")
    verdicts: list[Verdict] = []
    reasons: dict[str, str] = {}
    if all(r == "accepted" for r in results):  # the common case, without the loop below
        verdicts = [Verdict.ACCEPTED] * lines
    else:
        for i, result in enumerate(results):
            if result == "accepted":
                verdicts.append(Verdict.ACCEPTED)
                continue
            if not isinstance(result, str):
                raise ValueError(f"verdict {i + 1} is {result!r:.60}, not a string")
            kind, _, reason = result.partition(":")
            if kind == "rejected":
                verdicts.append(Verdict.REJECTED)
            elif kind == "failed":
                verdicts.append(Verdict.FAILED)
            else:
                raise ValueError(f"verdict {i + 1} is {result!r:.60} (an event line cannot be "
                                 "blank)")
            reasons.setdefault(kind, reason.strip())
    counted = Counter(verdicts)
    for key, verdict in (("accepted", Verdict.ACCEPTED), ("rejected", Verdict.REJECTED),
                         ("failed", Verdict.FAILED)):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value != counted[verdict]:
            raise ValueError(f"'{key}' is {value!r:.40} but {counted[verdict]} verdicts say so")
    return Verdicts(verdicts, counted[Verdict.ACCEPTED], counted[Verdict.REJECTED],
                    counted[Verdict.FAILED], reasons)


@dataclass(frozen=True)
class Settled:
    accepted: int
    rejected: int
    unacknowledged: int


def settle(ledger: Ledger, chunk: Chunk, verdicts: Verdicts | None) -> Settled:
    """File every line of ``chunk`` in the ledger (whose ``sent`` was called for them).

    ``verdicts`` None: the request failed as a whole (timeout, broken connection, 5xx, an
    unreadable answer) and every line is unacknowledged. Accepted lines are acknowledged,
    failed ones unacknowledged, rejected ones refused (never stored).
    """
    if verdicts is None or verdicts.all_accepted:
        acknowledged = verdicts is not None
        for hour, a, b in chunk.runs:
            clicks = sum(chunk.clicks[a:b])
            ledger.settle_many(hour, chunk.users[a:b], clicks, (b - a) - clicks, acknowledged)
        n = len(chunk)
        return Settled(n, 0, 0) if acknowledged else Settled(0, 0, n)
    if len(verdicts.lines) != len(chunk):
        raise ValueError("verdicts and chunk differ in length")
    accepted = rejected = unacknowledged = 0
    for hour, user, click, verdict in zip(chunk.hours, chunk.users, chunk.clicks,
                                          verdicts.lines, strict=True):
        if verdict is Verdict.REJECTED:
            ledger.refused()
            rejected += 1
        else:
            ok = verdict is Verdict.ACCEPTED
            ledger.settle(hour, user, click, acknowledged=ok)
            if ok:
                accepted += 1
            else:
                unacknowledged += 1
    return Settled(accepted, rejected, unacknowledged)

"""Batch ingest: a body of newline-delimited JSON events, each validated like a single POST.

A line is ``{"timestamp": 1795802400000, "user": "alice", "event": "click"}``; ``timestamp``
may be a JSON integer or a string of digits. Blank lines are skipped (they get no verdict);
every other line gets exactly one verdict, in order. Pure: ``now_ms`` is an argument.

Bounded cost (one request must not hold the server):
- ``count_lines`` counts a body's lines at C speed, so that a caller can refuse a body with too
  many before any line is looked at;
- ``judge_steps`` judges the body as a generator of bounded steps: each ``next()`` does at most
  one window of ``WINDOW_BYTES`` through the fast path, or ``SLOW_LINES`` lines through the
  per-line rules, or skips a window of blank lines. An async caller gives other tasks a turn
  between steps; ``parse_batch_columns`` runs them back to back;
- verdicts are kept as runs of line numbers (``LineRuns``), not an object per line, so their
  memory is bounded by the body's size however many lines are blank or rejected.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal, NamedTuple, TypeVar, cast

import msgspec

from shardstats.core.events import MAX_TIMESTAMP_MS, Event, EventColumns, EventKind
from shardstats.core.validation import (
    _CONTROL,
    MAX_ID_BYTES,
    Limits,
    check_window,
    parse_event_id,
    parse_kind,
    parse_timestamp_text,
    parse_user,
)
from shardstats.errors import Field, InvalidInput, Problem, Reason

WINDOW_BYTES = 16 * 1024  # a body is split into lines a window at a time
SLOW_LINES = 32  # lines judged by the per-line rules between two steps
COUNT_BYTES = 256 * 1024  # bytes counted for newlines between two steps

T = TypeVar("T")
Steps = Generator[None, None, T]  # bounded work per ``next()``; the result on StopIteration


def finish(steps: Steps[T]) -> T:
    """Run every step at once (tests, tools, small bodies)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value)


class BatchLine(NamedTuple):
    line: int  # 1-based line number in the body
    event: Event | None
    error: str | None


class LineRuns:
    """Ascending line numbers as runs of consecutive numbers (two 4-byte ints a run)."""

    __slots__ = ("_firsts", "_lasts", "count")

    def __init__(self) -> None:
        self._firsts = array("I")
        self._lasts = array("I")
        self.count = 0

    def add(self, first: int, last: int | None = None) -> None:
        """Lines ``first..last`` (inclusive; just ``first`` when last is None), all after
        every line added before."""
        last = first if last is None else last
        self.count += last - first + 1
        if self._lasts and self._lasts[-1] == first - 1:
            self._lasts[-1] = last
        else:
            self._firsts.append(first)
            self._lasts.append(last)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        for first, last in self.runs():
            yield from range(first, last + 1)

    def runs(self) -> Iterator[tuple[int, int]]:
        return zip(self._firsts, self._lasts, strict=True)

    @property
    def first(self) -> int:
        return self._firsts[0]

    @property
    def run_count(self) -> int:
        return len(self._firsts)


@dataclass(slots=True)
class ParsedBatch:
    """The valid events as columns, in pieces of body order, with their line numbers, and the
    rejected lines by reason.

    ``line_count`` is the number of verdicts the documented per-line ``results`` has: one per
    newline plus one (so a final newline gives a last, blank line)."""

    parts: list[EventColumns]
    event_runs: LineRuns
    rejected: dict[str, LineRuns]  # by message
    problems: dict[str, Problem]  # the problem each message of ``rejected`` states
    line_count: int

    @property
    def columns(self) -> EventColumns:
        """Every valid event in one piece (for tests and small batches)."""
        return EventColumns.concat(self.parts) if self.parts else EventColumns([], [], [], None)

    def timestamps(self) -> Iterator[int]:
        return chain.from_iterable(part.timestamps for part in self.parts)

    def chunks(self, size: int) -> Steps[list[EventColumns]]:
        """The valid events in body order, cut into pieces of at most ``size`` (at least one
        piece, maybe empty), one piece per step."""
        out: list[EventColumns] = []
        group: list[EventColumns] = []
        held = 0
        for part in self.parts:
            for piece in part.chunks(size):
                if held + len(piece) > size:
                    out.append(EventColumns.concat(group))
                    group, held = [], 0
                    yield
                group.append(piece)
                held += len(piece)
        out.append(EventColumns.concat(group) if group else EventColumns([], [], [], None))
        return out

    @property
    def events(self) -> list[Event]:
        return self.columns.events()

    @property
    def event_lines(self) -> list[int]:
        return list(self.event_runs)

    @property
    def errors(self) -> list[tuple[int, str]]:
        """Every rejected line with its reason, in body order (for tests and small batches)."""
        return sorted((n, reason) for reason, runs in self.rejected.items() for n in runs)

    def lines(self) -> list[BatchLine]:
        """Every non-blank line's verdict, in body order (for tests and small batches)."""
        out = [BatchLine(n, e, None) for n, e in zip(self.event_lines, self.events,
                                                      strict=True)]
        out += [BatchLine(n, None, reason) for n, reason in self.errors]
        return sorted(out, key=lambda line: line.line)


Body = bytes | Sequence[bytes]  # the whole body, or its chunks as they arrived


def count_lines(body: Body) -> Steps[int]:
    """The body's lines: its newlines, plus one for a last line with no newline after it."""
    chunks = [body] if isinstance(body, bytes) else body
    newlines = counted = 0
    last = b""
    for chunk in chunks:
        for start in range(0, len(chunk), COUNT_BYTES):
            newlines += chunk.count(b"\n", start, start + COUNT_BYTES)
            counted += min(COUNT_BYTES, len(chunk) - start)
            if counted >= COUNT_BYTES:
                counted = 0
                yield
        last = chunk or last
    return newlines + (1 if last and not last.endswith(b"\n") else 0)


def _windows(body: Body) -> Iterator[tuple[bytes, bool]]:
    """The body as windows of whole lines, each about ``WINDOW_BYTES`` (longer when a line is),
    with whether it ended at a newline (dropped) rather than at the body's end. The last
    window ends at the body's end (it may be empty). Chunks are joined only a window at a
    time: no copy of the whole body is made."""
    pending: list[bytes] = []  # the start of the next window
    pending_size = 0
    for chunk in [body] if isinstance(body, bytes) else body:
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size <= WINDOW_BYTES or b"\n" not in chunk:
            continue  # a window needs WINDOW_BYTES and a newline after them
        joined = b"".join(pending)
        start = 0
        while (end := joined.find(b"\n", start + WINDOW_BYTES)) >= 0:
            yield joined[start:end], True
            start = end + 1
        rest = joined[start:] if start else joined
        pending, pending_size = [rest], len(rest)
    yield b"".join(pending), False


def parse_batch(body: Body, now_ms: int, limits: Limits) -> list[BatchLine]:
    return parse_batch_columns(body, now_ms, limits).lines()


def parse_batch_columns(body: Body, now_ms: int, limits: Limits) -> ParsedBatch:
    return finish(judge_steps(body, now_ms, limits))


def judge_steps(body: Body, now_ms: int, limits: Limits) -> Steps[ParsedBatch]:
    """Judge every line, a bounded step at a time (see the module docstring).

    Windows end at a newline, so each holds whole lines; a window whose lines are all valid
    is taken by the fast path in one step, any other by the per-line rules. Either way each
    line gets the verdict the per-line rules give it alone."""
    low = max(0, now_ms - limits.accept_past_ms) if limits.accept_past_ms else 0
    high = (min(MAX_TIMESTAMP_MS, now_ms + limits.accept_future_ms) if limits.accept_future_ms
            else MAX_TIMESTAMP_MS)
    parts: list[EventColumns] = []
    event_runs = LineRuns()
    rejected: dict[str, LineRuns] = {}
    problems: dict[str, Problem] = {}
    before = 0  # lines before the current window
    last_is_blank = True  # the line after a final newline (or an empty body's only line)
    for window, at_newline in _windows(body):
        last_is_blank = at_newline
        if not window or window.isspace():  # blank lines only: no verdicts
            before += window.count(b"\n") + 1
            yield
            continue
        lines = window.split(b"\n")
        count = len(lines)
        if count > 1 and not lines[-1].strip():
            lines.pop()  # the usual final newline, or trailing blanks: no verdict either way
        fast = _all_valid_fast(lines, low, high, limits.max_user_bytes)
        if fast is not None:
            parts.append(fast)
            event_runs.add(before + 1, before + len(lines))
            yield
        else:
            for offset in range(0, len(lines), SLOW_LINES):
                events: list[Event] = []
                for number, raw in enumerate(lines[offset:offset + SLOW_LINES],
                                             start=before + offset + 1):
                    if not raw.strip():
                        continue  # blank lines get no verdict
                    try:
                        events.append(_event(raw, now_ms, limits))
                    except InvalidInput as exc:
                        reason = str(exc)
                        runs = rejected.get(reason)
                        if runs is None:
                            runs = rejected[reason] = LineRuns()
                            problems[reason] = exc.problem
                        runs.add(number)
                        continue
                    event_runs.add(number)
                if events:
                    parts.append(EventColumns.of(events))
                yield
        before += count
    return ParsedBatch(parts, event_runs, rejected, problems,
                       before + (1 if last_is_blank else 0))


class _Line(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    # str and int fields only, so no reference cycles: gc=False keeps 10,000 of them per
    # batch out of the collector's sight.
    timestamp: int
    user: str
    event: Literal["click", "impression"]
    id: str | None = None


_DECODE_LINE = msgspec.json.Decoder(_Line).decode


def _all_valid_fast(lines: list[bytes], low: int, high: int, max_user: int
                    ) -> EventColumns | None:
    """The common case, a window of valid lines with no blank ones: each line decoded and
    type-checked by msgspec in C, then checked a column at a time. None as soon as anything is
    unusual (blank lines, other keys, other types, anything out of bounds): the per-line rules
    then judge every line of the window and say why. Lines are decoded one by one, never
    joined into one array, so no JSON value can straddle two lines."""
    if not lines or b"" in lines:
        return None
    try:
        items = list(map(_DECODE_LINE, lines))
    except msgspec.DecodeError:
        return None
    # List comprehensions, not map(attrgetter): Python 3.11 specialises their attribute
    # reads, twice as fast here.
    timestamps = [item.timestamp for item in items]
    users = [item.user for item in items]
    if min(timestamps) < low or max(timestamps) > high:
        return None
    # Per user: non-empty, ASCII (so characters are bytes), short enough, no control
    # characters; checked over the whole column by C loops rather than line by line. A
    # window of ASCII bytes with no backslash (so no escapes) and no DEL holds only strings
    # that are ASCII with no control character: JSON refuses C0 characters raw in a string,
    # and C1 ones are not ASCII. Then only the lengths are left to check.
    plain = _plain(lines)
    if (min(map(len, users)) == 0 or max(map(len, users)) > max_user
            or (not plain and (not all(map(str.isascii, users))
                              or _CONTROL.search("".join(users))))):
        return None
    ids: list[str | None] | None = [item.id for item in items]
    assert ids is not None
    if ids.count(None) == len(ids):
        ids = None
    elif not all(map(_valid_id_plain if plain else _valid_id, ids)):
        return None
    kinds = _KINDS
    return EventColumns(timestamps, users, [kinds[item.event] for item in items], ids)


def _plain(lines: list[bytes]) -> bool:
    """Whether the lines are ASCII with no backslash and no DEL (C loops over the bytes)."""
    joined = b"\n".join(lines)
    return joined.isascii() and b"\\" not in joined and b"\x7f" not in joined


def _valid_id_plain(eid: str | None) -> bool:
    """``_valid_id`` for an id of a ``_plain`` window (ASCII, no control character)."""
    return eid is None or 0 < len(eid) <= MAX_ID_BYTES


def _valid_id(eid: str | None) -> bool:
    return eid is None or (eid.isascii() and 0 < len(eid) <= MAX_ID_BYTES
                           and not _CONTROL.search(eid))


_KINDS = {"click": int(EventKind.CLICK), "impression": int(EventKind.IMPRESSION)}


def _event(raw: bytes, now_ms: int, limits: Limits) -> Event:
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("not valid JSON", Field.LINE, Reason.MALFORMED) from None
    if not isinstance(item, dict):
        raise InvalidInput("each line must be a JSON object", Field.LINE, Reason.MALFORMED)
    params: dict[str, str] = {}
    for key in ("timestamp", "user", "event", "id"):
        value = item.get(key)
        if value is None:
            continue
        if key == "timestamp" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value) if value >= 0 else "-"
        if not isinstance(value, str):
            raise InvalidInput(f"'{key}' must be a string" + (" or an integer" if key ==
                                                              "timestamp" else ""),
                               Field(key), Reason.MALFORMED)
        params[key] = value
    if "timestamp" not in params:
        raise InvalidInput("missing field 'timestamp'", Field.TIMESTAMP, Reason.MISSING)
    timestamp = parse_timestamp_text(params["timestamp"], "timestamp")
    user = parse_user(params, limits.max_user_bytes)
    kind = parse_kind(params)
    eid = parse_event_id(params)
    check_window(timestamp, now_ms, limits)
    return Event(timestamp, user, kind, eid)

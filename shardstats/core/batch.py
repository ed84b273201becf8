"""Batch ingest: a body of newline-delimited JSON events, each validated like a single POST.

A line is ``{"timestamp": 1795802400000, "user": "alice", "event": "click"}``; ``timestamp``
may be a JSON integer or a string of digits. Blank lines are skipped (they get no verdict);
every other line gets exactly one verdict, in order. Pure: ``now_ms`` is an argument.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

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
from shardstats.errors import InvalidInput


class BatchLine(NamedTuple):
    line: int  # 1-based line number in the body
    event: Event | None
    error: str | None


@dataclass(slots=True)
class ParsedBatch:
    """The valid events as columns with their line numbers, and the rejected lines with their
    reasons."""

    columns: EventColumns
    event_lines: Sequence[int]
    errors: list[tuple[int, str]]

    @property
    def events(self) -> list[Event]:
        return self.columns.events()

    def lines(self) -> list[BatchLine]:
        """Every non-blank line's verdict, in body order (for tests and small batches)."""
        out = [BatchLine(n, e, None) for n, e in zip(self.event_lines, self.events,
                                                      strict=True)]
        out += [BatchLine(n, None, reason) for n, reason in self.errors]
        return sorted(out, key=lambda line: line.line)


def parse_batch(body: bytes, now_ms: int, limits: Limits) -> list[BatchLine]:
    return parse_batch_columns(body, now_ms, limits).lines()


def parse_batch_columns(body: bytes, now_ms: int, limits: Limits) -> ParsedBatch:
    low = max(0, now_ms - limits.accept_past_ms) if limits.accept_past_ms else 0
    high = (min(MAX_TIMESTAMP_MS, now_ms + limits.accept_future_ms) if limits.accept_future_ms
            else MAX_TIMESTAMP_MS)
    lines = body.split(b"\n")
    if not lines[-1].strip():
        lines.pop()  # the usual final newline, or trailing blanks
    fast = _all_valid_fast(lines, low, high, limits.max_user_bytes)
    if fast is not None:
        return fast
    events: list[Event] = []
    event_lines: list[int] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue  # blank lines get no verdict
        try:
            event = _event(raw, now_ms, limits)
        except InvalidInput as exc:
            errors.append((number, str(exc)))
            continue
        events.append(event)
        event_lines.append(number)
    return ParsedBatch(EventColumns.of(events), event_lines, errors)


class _Line(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    # str and int fields only, so no reference cycles: gc=False keeps 10,000 of them per
    # batch out of the collector's sight.
    timestamp: int
    user: str
    event: Literal["click", "impression"]
    id: str | None = None


_DECODE_LINE = msgspec.json.Decoder(_Line).decode


def _all_valid_fast(lines: list[bytes], low: int, high: int, max_user: int) -> ParsedBatch | None:
    """The common case, a batch of valid lines with no blank ones: each line decoded and
    type-checked by msgspec in C, then checked a column at a time. None as soon as anything is
    unusual (blank lines, other keys, other types, anything out of bounds): the per-line rules
    then judge every line and say why. Lines are decoded one by one, never joined into one
    array, so no JSON value can straddle two lines."""
    if not lines or b"" in lines:
        return None
    try:
        items = list(map(_DECODE_LINE, lines))
    except msgspec.DecodeError:
        return None
    timestamps = [item.timestamp for item in items]
    users = [item.user for item in items]
    if min(timestamps) < low or max(timestamps) > high:
        return None
    # Per user: non-empty, ASCII (so characters are bytes), short enough, no control
    # characters; checked over the whole column by C loops rather than line by line.
    if (min(map(len, users)) == 0 or max(map(len, users)) > max_user
            or not all(map(str.isascii, users)) or _CONTROL.search("".join(users))):
        return None
    ids: list[str | None] | None = [item.id for item in items]
    assert ids is not None
    if ids.count(None) == len(ids):
        ids = None
    elif not all(eid is None or _valid_id(eid) for eid in ids):
        return None
    kinds = _KINDS
    return ParsedBatch(EventColumns(timestamps, users, [kinds[item.event] for item in items],
                                    ids), range(1, len(lines) + 1), [])


def _valid_id(eid: str) -> bool:
    return eid.isascii() and 0 < len(eid) <= MAX_ID_BYTES and not _CONTROL.search(eid)


_KINDS = {"click": int(EventKind.CLICK), "impression": int(EventKind.IMPRESSION)}


def _event(raw: bytes, now_ms: int, limits: Limits) -> Event:
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("not valid JSON") from None
    if not isinstance(item, dict):
        raise InvalidInput("each line must be a JSON object")
    params: dict[str, str] = {}
    for key in ("timestamp", "user", "event", "id"):
        value = item.get(key)
        if value is None:
            continue
        if key == "timestamp" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value) if value >= 0 else "-"
        if not isinstance(value, str):
            raise InvalidInput(f"'{key}' must be a string" + (" or an integer" if key ==
                                                              "timestamp" else ""))
        params[key] = value
    if "timestamp" not in params:
        raise InvalidInput("missing field 'timestamp'")
    timestamp = parse_timestamp_text(params["timestamp"], "timestamp")
    user = parse_user(params, limits.max_user_bytes)
    kind = parse_kind(params)
    eid = parse_event_id(params)
    check_window(timestamp, now_ms, limits)
    return Event(timestamp, user, kind, eid)

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
    low = now_ms - limits.accept_past_ms if limits.accept_past_ms else 0
    high = now_ms + limits.accept_future_ms if limits.accept_future_ms else MAX_TIMESTAMP_MS
    lines = body.split(b"\n")
    if not lines[-1].strip():
        lines.pop()  # the usual final newline, or trailing blanks
    fast = _all_valid_fast(lines, low, high, limits.max_user_bytes)
    if fast is not None:
        return fast
    numbered = [(n, raw) for n, raw in enumerate(lines, start=1) if raw.strip()]
    items = _decode_all([raw for _, raw in numbered])
    events: list[Event] = []
    event_lines: list[int] = []
    errors: list[tuple[int, str]] = []
    for (number, raw), item in zip(numbered, items, strict=True):
        try:
            event = _event(raw if item is _UNPARSED else item, now_ms, limits)
        except InvalidInput as exc:
            errors.append((number, str(exc)))
            continue
        events.append(event)
        event_lines.append(number)
    return ParsedBatch(EventColumns.of(events), event_lines, errors)


class _Line(msgspec.Struct, gc=False):  # str and int fields only: no cycles to collect
    timestamp: int
    user: str
    event: Literal["click", "impression"]
    id: str | None = None


_DECODER = msgspec.json.Decoder(list[_Line])


def _all_valid_fast(lines: list[bytes], low: int, high: int, max_user: int) -> ParsedBatch | None:
    """The common case, a batch of valid lines with no blank ones, decoded and type-checked by
    msgspec in C and checked a column at a time; None as soon as anything is unusual (the full
    rules then judge every line and say why)."""
    if not lines or b"" in lines:
        return None
    try:
        items = _DECODER.decode(b"[" + b",".join(lines) + b"]")
    except msgspec.DecodeError:  # broken JSON, or a line of a shape the fast path skips
        return None
    if len(items) != len(lines):  # a whitespace-only line, or one holding two values
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


_UNPARSED = object()
_KINDS = {"click": int(EventKind.CLICK), "impression": int(EventKind.IMPRESSION)}


def _decode_all(lines: list[bytes]) -> list[object]:
    """One ``json.loads`` of the whole batch as an array (the C parser does the loop); if any
    line is broken, fall back to line by line so each gets its own verdict."""
    try:
        items = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        return [_UNPARSED] * len(lines)
    if isinstance(items, list) and len(items) == len(lines):
        return items
    return [_UNPARSED] * len(lines)  # a line held several values ("1,2"): judge each alone


def _event(raw: object, now_ms: int, limits: Limits) -> Event:
    if isinstance(raw, bytes):
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidInput("not valid JSON") from None
    else:
        item = raw
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

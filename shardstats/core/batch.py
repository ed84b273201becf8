"""Batch ingest: a body of newline-delimited JSON events, each validated like a single POST.

A line is ``{"timestamp": 1795802400000, "user": "alice", "event": "click"}``; ``timestamp``
may be a JSON integer or a string of digits. Blank lines are skipped (they get no verdict);
every other line gets exactly one verdict, in order. Pure: ``now_ms`` is an argument.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from shardstats.core.events import MAX_TIMESTAMP_MS, Event, EventKind
from shardstats.core.validation import (
    _CONTROL,
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


def parse_batch(body: bytes, now_ms: int, limits: Limits) -> list[BatchLine]:
    numbered = [(n, raw) for n, raw in enumerate(body.split(b"\n"), start=1) if raw.strip()]
    items = _decode_all([raw for _, raw in numbered])
    low = now_ms - limits.accept_past_ms if limits.accept_past_ms else 0
    high = now_ms + limits.accept_future_ms if limits.accept_future_ms else MAX_TIMESTAMP_MS
    max_user = limits.max_user_bytes
    out = []
    for (number, raw), item in zip(numbered, items, strict=True):
        # Fast path for the common, valid line; anything unusual takes the full rules below
        # (which also produce the reason).
        if type(item) is dict and "id" not in item:
            ts, user, kind = item.get("timestamp"), item.get("user"), item.get("event")
            if (
                type(ts) is int
                and low <= ts <= high
                and type(user) is str
                and user.isascii()
                and 0 < len(user) <= max_user
                and kind in _KINDS
                and not _CONTROL.search(user)
            ):
                out.append(BatchLine(number, Event(ts, user, _KINDS[kind]), None))
                continue
        try:
            out.append(BatchLine(number, _event(raw if item is _UNPARSED else item, now_ms,
                                                limits), None))
        except InvalidInput as exc:
            out.append(BatchLine(number, None, str(exc)))
    return out


_UNPARSED = object()
_KINDS = {"click": EventKind.CLICK, "impression": EventKind.IMPRESSION}


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

"""Turn a raw query string into a typed ``Event`` or hour, or an ``InvalidInput`` that says why.

Rules:
- the query string is form-encoded (``+`` is a space) UTF-8; invalid percent-encoded UTF-8 is
  rejected rather than replaced, so a user id is never silently altered;
- a known parameter given twice is invalid; unknown parameters are ignored;
- ``timestamp``: ASCII digits only, at most 2**63-1;
- ``user``: 1..max_user_bytes bytes of UTF-8 with no control characters;
- ``event``: exactly ``click`` or ``impression``;
- a POST timestamp must lie inside the acceptance window around ``now_ms`` (0 disables a side).

Pure: the current time is an argument. ``Field`` and ``Reason`` members are looked up only
when raising: an enum member access costs several times an attribute access, on every
request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from shardstats.core.events import MAX_TIMESTAMP_MS, Event, EventKind
from shardstats.errors import Field, InvalidInput, Reason

# Unicode category Cc is exactly C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
KNOWN_PARAMS = frozenset({"timestamp", "user", "event", "id"})
MAX_ID_BYTES = 128
_GET_PARAMS = frozenset({"timestamp"})
MAX_QUERY_BYTES = 16 * 1024  # at least; grows with max_user_bytes (see query_limit)


def query_limit(max_user_bytes: int) -> int:
    """Longest accepted query string: room for a user id of the configured maximum even when
    every byte is percent-encoded (3 characters), plus the other parameters."""
    return max(MAX_QUERY_BYTES, 3 * max_user_bytes + 1024)


@dataclass(frozen=True, slots=True)
class Limits:
    max_user_bytes: int = 256
    accept_past_ms: int = 30 * 24 * 3_600_000
    accept_future_ms: int = 10 * 60_000


def parse_query(raw: bytes, max_bytes: int = MAX_QUERY_BYTES) -> dict[str, str]:
    """Decode the known parameters of a query string; reject duplicates and bad UTF-8."""
    return parse_query_fields(raw, KNOWN_PARAMS, max_bytes)


def parse_query_fields(
    raw: bytes, known: frozenset[str], max_bytes: int = MAX_QUERY_BYTES
) -> dict[str, str]:
    """``parse_query`` for any set of known parameter names."""
    if len(raw) > max_bytes:
        raise InvalidInput(f"query string longer than {max_bytes} bytes", Field.QUERY,
                           Reason.TOO_LONG)
    found: dict[str, str] = {}
    for field in raw.split(b"&"):
        if not field:
            continue
        key_raw, _, value_raw = field.partition(b"=")
        try:
            key = unquote_to_bytes(key_raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            continue  # no known name is undecodable: an unknown parameter, ignored
        if key not in known:
            continue
        if key in found:
            raise InvalidInput(f"parameter '{key}' given more than once", Field(key),
                               Reason.REPEATED)
        found[key] = _decode(value_raw, key)
    return found


def _decode(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not valid UTF-8 after percent-decoding", Field(what),
                           Reason.ENCODING) from None


def parse_timestamp(params: dict[str, str]) -> int:
    text = params.get("timestamp")
    if text is None:
        raise InvalidInput("missing parameter 'timestamp'", Field.TIMESTAMP, Reason.MISSING)
    return parse_timestamp_text(text, "timestamp")


def parse_timestamp_text(text: str, name: str) -> int:
    """``name``: the parameter's name (a ``Field`` value)."""
    if not text:
        raise InvalidInput(f"parameter '{name}' is empty", Field(name), Reason.EMPTY)
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(f"{name} must be milliseconds since the epoch, digits only",
                           Field(name), Reason.MALFORMED)
    significant = text.lstrip("0")
    if len(significant) > 19 or int(significant or "0") > MAX_TIMESTAMP_MS:
        raise InvalidInput(f"{name} exceeds the maximum {MAX_TIMESTAMP_MS}", Field(name),
                           Reason.TOO_LARGE)
    return int(significant or "0")


def parse_user(params: dict[str, str], max_user_bytes: int) -> str:
    user = params.get("user")
    if user is None:
        raise InvalidInput("missing parameter 'user'", Field.USER, Reason.MISSING)
    if not user:
        raise InvalidInput("parameter 'user' is empty", Field.USER, Reason.EMPTY)
    size = _utf8_size(user, "user")
    if size > max_user_bytes:
        raise InvalidInput(f"user is {size} bytes long; the maximum is {max_user_bytes}",
                           Field.USER, Reason.TOO_LONG)
    if _CONTROL.search(user):
        raise InvalidInput("user contains a control character", Field.USER,
                           Reason.CONTROL_CHARACTER)
    return user


def _utf8_size(text: str, what: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escapes can carry
        raise InvalidInput(f"{what} is not valid Unicode", Field(what), Reason.ENCODING) from None


def parse_kind(params: dict[str, str]) -> EventKind:
    text = params.get("event")
    if text is None:
        raise InvalidInput("missing parameter 'event'", Field.EVENT, Reason.MISSING)
    kind = EventKind.parse(text)
    if kind is None:
        raise InvalidInput("event must be 'click' or 'impression'", Field.EVENT,
                           Reason.UNKNOWN_VALUE)
    return kind


def parse_event_id(params: dict[str, str]) -> str | None:
    """The optional client event id (for idempotent retries): 1..128 bytes, no controls."""
    eid = params.get("id")
    if eid is None:
        return None
    if not eid:
        raise InvalidInput("parameter 'id' is empty", Field.ID, Reason.EMPTY)
    if _utf8_size(eid, "id") > MAX_ID_BYTES:
        raise InvalidInput(f"id is longer than {MAX_ID_BYTES} bytes", Field.ID, Reason.TOO_LONG)
    if _CONTROL.search(eid):
        raise InvalidInput("id contains a control character", Field.ID,
                           Reason.CONTROL_CHARACTER)
    return eid


def check_window(timestamp_ms: int, now_ms: int, limits: Limits) -> None:
    if limits.accept_past_ms and timestamp_ms < now_ms - limits.accept_past_ms:
        raise InvalidInput(
            f"timestamp is more than {limits.accept_past_ms // 1000} s in the past",
            Field.TIMESTAMP, Reason.TOO_OLD,
        )
    if limits.accept_future_ms and timestamp_ms > now_ms + limits.accept_future_ms:
        raise InvalidInput(
            f"timestamp is more than {limits.accept_future_ms // 1000} s in the future",
            Field.TIMESTAMP, Reason.TOO_NEW,
        )


def event_from_query(raw: bytes, now_ms: int, limits: Limits) -> Event:
    """Validate a ``POST /analytics`` query string."""
    params = parse_query(raw, query_limit(limits.max_user_bytes))
    timestamp = parse_timestamp(params)
    user = parse_user(params, limits.max_user_bytes)
    kind = parse_kind(params)
    eid = parse_event_id(params)
    check_window(timestamp, now_ms, limits)
    return Event(timestamp, user, kind, eid)


def timestamp_from_query(raw: bytes) -> int:
    """Validate a ``GET /analytics`` query string: any valid timestamp is accepted; ``user``
    and ``event`` mean nothing to a GET, so they are unknown parameters here and ignored."""
    return parse_timestamp(parse_query_fields(raw, _GET_PARAMS))

"""Stream records: what cluster mode publishes to the replicated log, and the rule that makes
materializing the log exactly-once per hour.

Rules:
1. A log record is one block of validated events (any hours), as columns, msgpack-encoded
   with a format number first. The publisher validated every event against its own clock;
   a materializer applies what the log holds without judging it again (every node must apply
   the same events), but refuses a record it cannot decode or store, by fixed rules that do
   not depend on a node's settings or clock, so all nodes refuse it alike: an unknown kind,
   an empty or newline-holding user or id, a timestamp outside 0..2**63-1, more than
   ``MAX_HOURS_PER_RECORD`` hours.
2. Every node applies the log in order. Per hour, the journal keeps the highest stream seq
   whose events it holds, committed in the same transaction as those events, so the hour's
   state is exactly "every record up to that seq" and never a record without its
   predecessors (the *prefix* property).
3. The materializer hands each hour's part of a record to the hour's shard with a
   ``StreamTag(seq, prev)``: ``prev`` is the seq of the record it handed to that hour before,
   in the same pass over the log, or None for the hour's first record of a pass. A pass
   starts at a seq up to which every record is known to be applied to every hour.
4. ``admit`` (below) decides, in order, for each tag against the hour's applied seq:
   ``SKIP`` when ``seq <= applied`` (a redelivery: already applied); ``REFUSE`` when ``prev``
   is above ``applied`` (its predecessor is missing: an earlier commit failed, so this one
   must wait for the next pass, which starts below the gap); otherwise ``APPLY``.
   Refusals keep the prefix property through failed commits and crashed shards; skips make
   replays and redeliveries harmless.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from shardstats.core.events import HOUR_MS, EventColumns, EventKind

FORMAT = 1
MAX_HOURS_PER_RECORD = 4096  # publishers never exceed it (at most this many events a record)
MAX_TIMESTAMP_MS = 2**63 - 1  # what a journal block (int64) holds
_KINDS = frozenset(int(k) for k in EventKind)

_Wire = tuple[int, list[int], list[str], list[int], list[str | None] | None]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


class InvalidRecord(ValueError):
    """A log record that is not a block of events this build can apply."""


def encode(events: EventColumns) -> bytes:
    return _encoder.encode((FORMAT, events.timestamps, events.users, events.kinds, events.ids))


def decode(data: bytes) -> EventColumns:
    try:
        version, timestamps, users, kinds, ids = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidRecord(f"not a block of events: {exc}") from exc
    if version != FORMAT:
        raise InvalidRecord(f"record format {version} (this build reads {FORMAT})")
    try:
        events = EventColumns(timestamps, users, kinds, ids)
    except ValueError as exc:
        raise InvalidRecord(str(exc)) from exc
    if not users or min(map(len, users)) == 0 or any("\n" in u for u in users):
        raise InvalidRecord("empty block, empty user or a newline in a user")
    if not set(kinds) <= _KINDS:
        raise InvalidRecord("unknown event kind")
    if min(timestamps) < 0 or max(timestamps) > MAX_TIMESTAMP_MS:
        raise InvalidRecord("timestamp out of range")
    if len(events) > MAX_HOURS_PER_RECORD and len(
            {t // HOUR_MS for t in timestamps}) > MAX_HOURS_PER_RECORD:
        raise InvalidRecord(f"more than {MAX_HOURS_PER_RECORD} hours in one record")
    if ids is not None and any(i is not None and ("\n" in i or not i) for i in ids):
        raise InvalidRecord("an empty event id or a newline in one")
    return events


class StreamTag(NamedTuple):
    seq: int
    prev: int | None  # the seq handed to the same hour before, in this pass (rule 3)


class Verdict(enum.Enum):
    APPLY = "apply"
    SKIP = "skip"
    REFUSE = "refuse"


def admit(applied: int, tags: Sequence[StreamTag]) -> tuple[list[Verdict], int]:
    """Rule 4 for tags in arrival order; also the applied seq once the applied ones commit."""
    verdicts = []
    for seq, prev in tags:
        if seq <= applied:
            verdicts.append(Verdict.SKIP)
        elif prev is not None and prev > applied:
            verdicts.append(Verdict.REFUSE)
        else:
            verdicts.append(Verdict.APPLY)
            applied = seq
    return verdicts, applied

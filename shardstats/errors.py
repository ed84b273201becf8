"""The one exception tree of shardstats; each class knows the HTTP status it maps to.

    ShardstatsError                  500
    ├── InvalidInput                 400  bad input: a message for people, a Problem for machines
    │   └── BatchTooLarge            413  a batch body with more lines than allowed
    ├── ConfigError                       a setting is unknown or has a wrong value (CLI exit 2)
    ├── Unavailable                  503  overloaded or not ready; carries retry_after
    │   ├── Overloaded
    │   ├── NotReady
    │   └── LogUnavailable           the cluster log took nothing: down, no quorum, closed
    ├── LogOutcomeUnknown            500  sent to the cluster log, no ack: maybe stored
    ├── StorageError                 500  a journal/dictionary/snapshot operation failed
    │   └── CorruptFile              500  a file is not what it should be
    ├── InternalError                500  an unexpected error (a bug), logged with its traceback
    ├── StreamGap                    500  cluster: a log record for an hour ahead of a failed one
    ├── DataDirLocked                    another process owns the data directory (CLI exit 3)
    └── DictionaryBehind                 users.sqlite is older than its journals (exit 4)

Pure code (``core``) raises only ``InvalidInput`` and ``CorruptFile``.

What is wrong with an input is data, not text: ``InvalidInput.problem`` names the field and the
reason from two fixed sets (``Field``, ``Reason``). The 400 answers carry them and the rejection
metric is labelled with them; the message is for people and may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ShardstatsError(Exception):
    status = 500


class Field(StrEnum):
    """The part of a request that is wrong: a query parameter or batch-line field by name,
    or the query string, a batch line or a batch body as a whole."""

    TIMESTAMP = "timestamp"
    USER = "user"
    EVENT = "event"
    ID = "id"
    FROM = "from"
    TO = "to"
    STEP = "step"
    QUERY = "query"
    LINE = "line"
    BODY = "body"
    ARGUMENT = "argument"  # a command-line argument of an operator command


class Reason(StrEnum):
    MISSING = "missing"
    EMPTY = "empty"
    REPEATED = "repeated"  # a parameter given more than once
    ENCODING = "encoding"  # not UTF-8 after percent-decoding, or not valid Unicode
    MALFORMED = "malformed"  # not digits, not JSON, not a JSON object, a value of a wrong type
    TOO_LONG = "too_long"  # more bytes than allowed
    TOO_LARGE = "too_large"  # a number, range or line count beyond its maximum
    CONTROL_CHARACTER = "control_character"
    UNKNOWN_VALUE = "unknown_value"  # not one of the allowed words (event, step)
    TOO_OLD = "too_old"  # a POST timestamp before the acceptance window
    TOO_NEW = "too_new"  # a POST timestamp after it
    OUT_OF_ORDER = "out_of_order"  # a range's end before its start
    INVALID = "invalid"  # an operator command's argument (no finer code)


@dataclass(frozen=True, slots=True)
class Problem:
    field: Field
    reason: Reason


class InvalidInput(ShardstatsError):
    status = 400

    def __init__(self, message: str, field: Field = Field.ARGUMENT,
                 reason: Reason = Reason.INVALID) -> None:
        super().__init__(message)
        self.problem = Problem(field, reason)

    def as_json(self) -> dict[str, str]:
        """The body of a 400: the message, and the problem as codes."""
        return {"error": str(self), "field": self.problem.field,
                "reason": self.problem.reason}


class BatchTooLarge(InvalidInput):
    status = 413


class ConfigError(ShardstatsError, ValueError):
    """A setting is unknown or has a value of the wrong kind."""


class Unavailable(ShardstatsError):
    status = 503
    retry_after = 1


class Overloaded(Unavailable):
    pass


class NotReady(Unavailable):
    retry_after = 2


class LogUnavailable(Unavailable):
    """The cluster log did not store anything (connection down, no quorum, log closed).

    Retrying is safe: nothing was published. ``reason`` is a short code for metrics and logs
    (``disconnected``, ``no_quorum``, ``closed``, ...), never parsed from the message.
    """

    retry_after = 2

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class LogOutcomeUnknown(ShardstatsError):
    """A publish was sent but no ack came back in time: the record may or may not be stored.

    A retry with the same ``msg_id`` inside the log's duplicate window is harmless.
    """


class StorageError(ShardstatsError):
    pass


class CorruptFile(StorageError):
    pass


class InternalError(ShardstatsError):
    """What the waiters of an actor's operation get when it failed for no reason storage
    explains (a programming mistake): the actor logged the original with its traceback."""


class DataDirLocked(ShardstatsError):
    pass


class StreamGap(ShardstatsError):
    """Cluster mode: a log record for an hour arrived while an earlier one for that hour is
    missing (its commit failed); the materializer applies both again on its next pass."""


class DictionaryBehind(ShardstatsError):
    """``users.sqlite`` lacks ids its mark or the journals show it once held (put back alone
    from an older backup): the server refuses to start (``shardstats.storage.issued``)."""

"""The one exception tree of shardstats; each class knows the HTTP status it maps to.

    ShardstatsError                  500
    ├── InvalidInput                 400  bad query parameter, reason in the message
    │   └── BatchTooLarge            413  a batch body with more lines than allowed
    ├── Unavailable                  503  overloaded or not ready; carries retry_after
    │   ├── Overloaded
    │   ├── NotReady
    │   └── LogUnavailable           the cluster log took nothing: down, no quorum, closed
    ├── LogOutcomeUnknown            500  sent to the cluster log, no ack: maybe stored
    ├── StorageError                 500  a journal/dictionary/snapshot operation failed
    │   └── CorruptFile              500  a file is not what it should be
    ├── InternalError                500  an unexpected error (a bug), logged with its traceback
    ├── StreamGap                    500  cluster: a log record for an hour ahead of a failed one
    └── DataDirLocked                    another process owns the data directory (CLI exit 3)

Pure code (``core``) raises only ``InvalidInput`` and ``CorruptFile``.
"""

from __future__ import annotations


class ShardstatsError(Exception):
    status = 500


class InvalidInput(ShardstatsError):
    status = 400

    @property
    def reason(self) -> str:
        return str(self)


class BatchTooLarge(InvalidInput):
    status = 413


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

"""The one exception tree of shardstats; each class knows the HTTP status it maps to.

    ShardstatsError                  500
    ├── InvalidInput                 400  bad query parameter, reason in the message
    │   └── BatchTooLarge            413  a batch body with more lines than allowed
    ├── Unavailable                  503  overloaded or not ready; carries retry_after
    │   ├── Overloaded
    │   └── NotReady
    ├── StorageError                 500  a journal/dictionary/snapshot operation failed
    │   └── CorruptFile              500  a file is not what it should be
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


class StorageError(ShardstatsError):
    pass


class CorruptFile(StorageError):
    pass


class DataDirLocked(ShardstatsError):
    pass

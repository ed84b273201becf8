"""What the waiters of a failed storage operation are told, and how the failure is logged.

Storage failures are expected (a full disk, a damaged file): one log line, and the waiters
get the ``StorageError``. Anything else is a bug: it is logged once, here, with its
traceback, and the waiters get an ``InternalError`` (also a 500, but never reported as a
storage problem). Either way the actor then treats its file as it does after any failed
commit: drops the connection and re-reads the file before the next one.
"""

from __future__ import annotations

import logging

from shardstats.errors import InternalError, ShardstatsError
from shardstats.storage.sqlite import as_storage_error


def report_failure(
    exc: Exception, log: logging.Logger, what: str, level: int = logging.ERROR
) -> ShardstatsError:
    """Log ``what`` failed (with the traceback if it is a bug); return what to tell waiters."""
    if isinstance(exc, InternalError):  # another actor's bug, logged by that actor
        log.log(level, "%s failed: %s", what, exc)
        return exc
    error = as_storage_error(exc)
    if error is not None:
        log.log(level, "%s failed: %s", what, error)
        return error
    log.error("%s failed unexpectedly (a bug)", what, exc_info=exc)
    return InternalError(f"{what} failed unexpectedly: {exc!r}")

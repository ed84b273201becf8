"""What the actors report as they work; metrics implement it, tests and tools may ignore it.

The actors never import a metrics library: they call these hooks, and the default does
nothing. Keeps ``shards`` testable without Prometheus and the hot path free of globals.
"""

from __future__ import annotations


class Observer:
    def commit(self, events: int, seconds: float, ok: bool) -> None:
        """A group commit of ``events`` finished (``ok``) or failed after ``seconds``."""

    def snapshot(self, seconds: float, ok: bool) -> None:
        """A snapshot file was written (or failed) in ``seconds``."""

    def load(self, seconds: float, replayed: int) -> None:
        """A past hour was loaded from disk, replaying ``replayed`` journal events."""


NULL_OBSERVER = Observer()

"""Latency samples, percentiles and rates, without I/O (times are passed in, in seconds).

Percentiles use the nearest-rank definition: the p-th percentile of n sorted samples is the
sample at 1-based rank ``ceil(p/100 · n)`` (rank 1 for p = 0). It is always a value that was
actually measured, and P100 is the maximum.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tools.loadgen.workload import RequestClass

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {p}")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values) - 1e-9))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class ClassSummary:
    """Latencies in milliseconds (``None`` when there was no successful sample)."""

    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rate: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "rate_per_s": round(self.rate, 2),
            "p50_ms": _round(self.p50_ms),
            "p90_ms": _round(self.p90_ms),
            "p99_ms": _round(self.p99_ms),
            "max_ms": _round(self.max_ms),
            "mean_ms": _round(self.mean_ms),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(
    latencies_s: Iterable[float],
    errors: Counter[str],
    completed_in_window: int,
    window_s: float,
) -> ClassSummary:
    """Summary of one class. Error responses are counted, not mixed into the latencies."""
    values = sorted(latencies_s)
    ok = len(values)
    n_errors = sum(errors.values())
    rate = completed_in_window / window_s if window_s > 0 else 0.0
    if not values:
        return ClassSummary(ok + n_errors, ok, n_errors, dict(errors), rate,
                            None, None, None, None, None)
    p50, p90, p99 = (percentile(values, p) * 1000 for p in PERCENTILES)
    return ClassSummary(
        requests=ok + n_errors,
        ok=ok,
        errors=n_errors,
        error_kinds=dict(errors),
        rate=rate,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        max_ms=values[-1] * 1000,
        mean_ms=sum(values) / ok * 1000,
    )


@dataclass
class ClassSamples:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)
    completed_in_window: int = 0


class Recorder:
    """Collects samples per request class for a measurement window ``[start, end]``.

    - A request *sent* (closed loop) or *scheduled* (open loop) before ``start`` is warm-up:
      not recorded at all.
    - Its latency is ``done - sent_or_scheduled``: in open loop that includes any time the
      request waited for a free connection, so a slow server cannot hide its queue
      (no coordinated omission).
    - Rates count responses *completed* inside the window, divided by its length.
    """

    def __init__(self, start: float, end: float) -> None:
        if end <= start:
            raise ValueError("window must have a positive length")
        self.start = start
        self.end = end
        self.classes: dict[RequestClass, ClassSamples] = {c: ClassSamples() for c in RequestClass}
        # Running totals for progress lines (everything, warm-up included).
        self.done = 0
        self.failed = 0

    def record(self, cls: RequestClass, t_sent: float, t_done: float, error: str | None) -> None:
        self.done += 1
        if error is not None:
            self.failed += 1
        if t_sent < self.start:
            return
        samples = self.classes[cls]
        if error is None:
            samples.latencies.append(t_done - t_sent)
        else:
            samples.errors[error] += 1
        if t_done <= self.end:
            samples.completed_in_window += 1

    @property
    def window(self) -> float:
        return self.end - self.start

    def summary(self) -> dict[RequestClass, ClassSummary]:
        return {
            cls: summarize(s.latencies, s.errors, s.completed_in_window, self.window)
            for cls, s in self.classes.items()
        }

    def total(self) -> ClassSummary:
        return self.merged(tuple(RequestClass))

    def merged(self, classes: Iterable[RequestClass]) -> ClassSummary:
        """One summary of several classes' samples together."""
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        completed = 0
        for samples in (self.classes[c] for c in classes):
            latencies.extend(samples.latencies)
            errors.update(samples.errors)
            completed += samples.completed_in_window
        return summarize(latencies, errors, completed, self.window)

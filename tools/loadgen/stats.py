"""Latency samples, percentiles and rates, without I/O (times are passed in, in seconds).

Percentiles are the standard library's ``statistics.quantiles(method="inclusive")``: linear
interpolation between the two samples around position ``p/100 · (n-1)`` of the sorted
samples, so no figure lies outside what was measured (P100 would be the maximum).
"""

from __future__ import annotations

import dataclasses
import statistics
from array import array
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from tools.loadgen.workload import RequestClass


def percentiles(values: Collection[float]) -> tuple[float, float, float]:
    """P50, P90 and P99 of the samples (``StatisticsError``, a ``ValueError``, for none)."""
    if len(values) == 1:  # Python 3.11's quantiles wants two samples
        (only,) = values
        return only, only, only
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98]


@dataclass(frozen=True)
class ClassSummary:
    """Latencies in milliseconds (``None`` when there was no successful sample)."""

    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rate: float
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None

    def as_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["rate_per_s"] = out.pop("rate")
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def summarize(latencies_s: Collection[float], errors: Counter[str], completed_in_window: int,
              window_s: float) -> ClassSummary:
    """Summary of one class. Error responses are counted, not mixed into the latencies."""
    ok, n_errors = len(latencies_s), sum(errors.values())
    rate = completed_in_window / window_s if window_s > 0 else 0.0
    summary = ClassSummary(ok + n_errors, ok, n_errors, dict(errors), rate)
    if not ok:
        return summary
    p50, p90, p99 = (p * 1000 for p in percentiles(latencies_s))
    return dataclasses.replace(summary, p50_ms=p50, p90_ms=p90, p99_ms=p99,
                               max_ms=max(latencies_s) * 1000,
                               mean_ms=statistics.fmean(latencies_s) * 1000)


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
        return {cls: self.merged([cls]) for cls in self.classes}

    def total(self) -> ClassSummary:
        return self.merged(tuple(RequestClass))

    def merged(self, classes: Iterable[RequestClass]) -> ClassSummary:
        """One summary of several classes' samples together."""
        latencies: array[float] = array("d")
        errors: Counter[str] = Counter()
        completed = 0
        for samples in (self.classes[c] for c in classes):
            latencies.extend(samples.latencies)
            errors.update(samples.errors)
            completed += samples.completed_in_window
        return summarize(latencies, errors, completed, self.window)

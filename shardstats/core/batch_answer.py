"""The answer to ``POST /analytics/batch``: counts, problems grouped by verdict, and the
per-line verdicts when they are not larger than the body.

    {"accepted": 2, "errors": [{"count": 1, "lines": "2", "verdict": "rejected: ..."}],
     "failed": 0, "rejected": 1, "results": ["accepted", "rejected: ...", "accepted", "blank"]}

- ``errors`` is always there: one entry per distinct verdict other than ``accepted`` and
  ``blank``, in the order of their first line, with the count and the lines as ranges
  (``"2,5-9,12"``). Its size grows with the number of runs of lines, never with their length:
  a run costs at most 14 bytes and needs at least 2 bytes of body (a one-character line and
  its newline), and ``max_batch_lines`` keeps line numbers at 6 digits by default.
- ``results`` is the documented verdict per body line (``results[i]`` is line ``i+1``; blank
  lines are ``"blank"``). It is given only when its encoding is no larger than the body plus
  ``RESULTS_SLACK``: a real event line is 50 bytes or more and its verdict 11, so every batch of
  events gets it, while a body of mostly blank or one-character lines (where a verdict would be
  8 to 30 times its line) gets only the grouped form.

Built as bounded steps (``Steps``), like the judging, so an async caller can let other tasks
run in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import msgspec

from shardstats.core.batch import LineRuns, ParsedBatch, Steps
from shardstats.errors import Problem

RESULTS_SLACK = 4096  # bytes of per-line verdicts always allowed beyond the body's size
RUNS_PER_STEP = 512  # runs of lines written, or events classified, between two steps
RESULTS_PER_STEP = 4096  # per-line verdicts encoded between two steps

ACCEPTED, BLANK = "accepted", "blank"
_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    accepted: int
    rejected: int
    failed: int
    rejected_by_problem: dict[Problem, int]  # for the metrics
    body: bytes  # the JSON answer


FailedAt = Callable[[int, int], "str | None"]  # (event index, timestamp) -> why it failed


def answer_steps(parsed: ParsedBatch, failed_at: FailedAt | None, body_size: int
                 ) -> Steps[BatchAnswer]:
    """The answer; ``failed_at`` says why an event was not made durable (None: it was), and
    is None itself when every event was."""
    accepted_runs = parsed.event_runs
    failed: dict[str, LineRuns] = {}
    if failed_at is not None:
        accepted_runs = LineRuns()
        for i, (number, timestamp) in enumerate(zip(parsed.event_runs, parsed.timestamps(),
                                                    strict=True)):
            why = failed_at(i, timestamp)
            if why is None:
                accepted_runs.add(number)
            else:
                failed.setdefault(why, LineRuns()).add(number)
            if i % RUNS_PER_STEP == RUNS_PER_STEP - 1:
                yield
    groups = sorted([(f"rejected: {reason}", runs) for reason, runs in parsed.rejected.items()]
                    + [(f"failed: {reason}", runs) for reason, runs in failed.items()],
                    key=lambda group: group[1].first)
    rejected = sum(len(runs) for runs in parsed.rejected.values())
    failed_count = sum(len(runs) for runs in failed.values())
    out = [b'{"accepted":%d,"errors":[' % len(accepted_runs)]
    for i, (verdict, runs) in enumerate(groups):
        out.append(b'%s{"count":%d,"lines":"' % (b"," if i else b"", len(runs)))
        yield from _ranges(runs, out)
        out.append(b'","verdict":%s}' % _encode(verdict))
    out.append(b'],"failed":%d,"rejected":%d' % (failed_count, rejected))
    blanks = parsed.line_count - len(accepted_runs) - rejected - failed_count
    size = (len(accepted_runs) * (len(ACCEPTED) + 3) + blanks * (len(BLANK) + 3)
            + sum(len(runs) * (len(_encode(verdict)) + 1) for verdict, runs in groups))
    if size <= body_size + RESULTS_SLACK:
        out.append(b',"results":')
        yield from _results(parsed.line_count, [(ACCEPTED, accepted_runs), *groups], out)
    out.append(b"}")
    by_problem: dict[Problem, int] = {}
    for message, runs in parsed.rejected.items():
        problem = parsed.problems[message]
        by_problem[problem] = by_problem.get(problem, 0) + len(runs)
    return BatchAnswer(len(accepted_runs), rejected, failed_count, by_problem, b"".join(out))


def _ranges(runs: LineRuns, out: list[bytes]) -> Steps[None]:
    """Append ``runs`` as ``"2,5-9,12"`` (without the quotes), a bounded slice per step."""
    pairs: Iterator[tuple[int, int]] = runs.runs()
    first_slice = True
    while chunk := list(islice(pairs, RUNS_PER_STEP)):
        text = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in chunk)
        out.append(text.encode() if first_slice else b"," + text.encode())
        first_slice = False
        yield


def _results(line_count: int, groups: list[tuple[str, LineRuns]], out: list[bytes]
             ) -> Steps[None]:
    """Append the per-line verdicts as a JSON array: ``results[i]`` is line ``i + 1``."""
    results = [BLANK] * line_count
    written = 0
    for verdict, runs in groups:
        for first, last in runs.runs():
            results[first - 1:last] = [verdict] * (last - first + 1)
            written += 1
            if written % RUNS_PER_STEP == 0:
                yield
    out.append(b"[")
    for start in range(0, line_count, RESULTS_PER_STEP):
        encoded = _encode(results[start:start + RESULTS_PER_STEP])
        out.append(encoded[1:-1] if start == 0 else b"," + encoded[1:-1])
        yield
    out.append(b"]")

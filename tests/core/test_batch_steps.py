"""Judging a batch in bounded steps gives the verdicts of judging it whole, and the answer is
bounded by the body."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstats.core import batch as batch_module
from shardstats.core.batch import LineRuns, count_lines, finish, judge_steps, parse_batch_columns
from shardstats.core.batch_answer import answer_steps
from shardstats.core.events import EventColumns
from shardstats.core.validation import Limits
from tests.core.test_columns import NOW, batch_bodies

LINE = b'{"timestamp": %d, "user": "a", "event": "click"}' % NOW


def answer(body: bytes, failed_at: object = None) -> dict[str, object]:
    parsed = parse_batch_columns(body, NOW, Limits())
    out = finish(answer_steps(parsed, failed_at, len(body)))  # type: ignore[arg-type]
    decoded: dict[str, object] = json.loads(out.body)
    return decoded


def chunked(body: bytes, cuts: list[int]) -> list[bytes]:
    """The body cut at the given offsets (as a server receives it), empty chunks included."""
    points = [0, *sorted(min(c, len(body)) for c in cuts), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points)]


@given(batch_bodies() | st.binary(max_size=300), st.integers(1, 40), st.integers(1, 3),
       st.lists(st.integers(0, 300), max_size=6))
def test_small_windows_steps_and_chunks_give_the_same_verdicts(
    body: bytes, window: int, slow: int, cuts: list[int]
) -> None:
    whole = parse_batch_columns(body, NOW, Limits())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_module, "WINDOW_BYTES", window)
        patch.setattr(batch_module, "SLOW_LINES", slow)
        cut = parse_batch_columns(chunked(body, cuts), NOW, Limits())
    assert cut.lines() == whole.lines()
    assert cut.line_count == whole.line_count == body.count(b"\n") + 1
    assert cut.columns == whole.columns


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_count_lines_counts_a_final_unended_line(body: bytes, cuts: list[int]) -> None:
    expected = len(body.split(b"\n")) - (1 if body.endswith(b"\n") or not body else 0)
    assert finish(count_lines(body)) == expected
    assert finish(count_lines(chunked(body, cuts))) == expected


def test_each_step_is_bounded() -> None:
    """A body of 10,000 lines for the per-line rules takes at least 10,000 / SLOW_LINES steps;
    a body of blank lines a step per window."""
    steps = judge_steps(b"x\n" * 10_000, NOW, Limits())
    taken = sum(1 for _ in steps)
    assert taken >= 10_000 // batch_module.SLOW_LINES
    blank = b"\n" * (4 * batch_module.WINDOW_BYTES)
    assert sum(1 for _ in judge_steps(blank, NOW, Limits())) >= 4


def test_line_runs_merge_consecutive_lines() -> None:
    runs = LineRuns()
    for first, last in [(1, 1), (2, 4), (7, 7), (8, 8), (10, 12)]:
        runs.add(first, last)
    assert list(runs.runs()) == [(1, 4), (7, 8), (10, 12)]
    assert len(runs) == 9 and list(runs) == [1, 2, 3, 4, 7, 8, 10, 11, 12]


def test_the_answer_keeps_per_line_results_for_real_batches() -> None:
    body = LINE + b"\nnot json\n" + LINE + b"\n"
    assert answer(body) == {
        "accepted": 2, "rejected": 1, "failed": 0,
        "errors": [{"verdict": "rejected: not valid JSON", "count": 1, "lines": "2"}],
        "results": ["accepted", "rejected: not valid JSON", "accepted", "blank"],
    }


def test_the_answer_groups_lines_when_verdicts_would_outweigh_the_body() -> None:
    body = b"x\n" * 5000 + LINE + b"\n" + b"x\n" * 3 + b"\n" * 10 + b"{}"
    got = answer(body)
    assert "results" not in got
    assert got["errors"] == [
        {"verdict": "rejected: not valid JSON", "count": 5003, "lines": "1-5000,5002-5004"},
        {"verdict": "rejected: missing field 'timestamp'", "count": 1, "lines": "5015"},
    ]
    assert (got["accepted"], got["rejected"], got["failed"]) == (1, 5004, 0)


def test_failed_events_are_grouped_and_not_counted_as_accepted() -> None:
    body = b"\n".join([LINE, b"x", LINE, LINE])

    def failed_at(index: int, timestamp: int) -> str | None:
        return "storage error" if index >= 1 else None

    got = answer(body, failed_at)
    assert (got["accepted"], got["rejected"], got["failed"]) == (1, 1, 2)
    assert got["results"] == ["accepted", "rejected: not valid JSON", "failed: storage error",
                              "failed: storage error"]
    assert got["errors"] == [
        {"verdict": "rejected: not valid JSON", "count": 1, "lines": "2"},
        {"verdict": "failed: storage error", "count": 2, "lines": "3-4"},
    ]


def test_columns_cut_into_chunks_keep_their_order() -> None:
    columns = EventColumns(list(range(10)), [str(i) for i in range(10)], [1] * 10,
                           [None, "a"] * 5)
    chunks = columns.chunks(4)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert EventColumns.concat(chunks) == columns
    assert columns.chunks(10) == [columns]

"""The cost of one ``POST /analytics/batch`` is bounded by its body, whatever it holds:

- too many lines: ``413`` before any line is judged;
- the answer is never much larger than the body, whatever the body holds;
- judging and answering a maximal hostile body never holds the event loop for long;
- the memory one request takes is a small multiple of its body.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from shardstats.core import batch as batch_module
from tests.http.conftest import NOW_MS, Harness, running_app

MAX_LINES = 100_000  # the documented default of max_batch_lines
MIB = 1024 * 1024
VALID = b'{"timestamp": %d, "user": "u%%d", "event": "click"}' % NOW_MS
# Valid JSON, but its user holds a control character: the fast path gives up on it and the
# per-line rules judge it (json.loads and every check), the dearest verdict there is.
SLOW_BAD = b'{"timestamp": %d, "user": "\\u0001%s", "event": "click"}' % (NOW_MS, b"p" * 100)


def bounded(response_size: int, body_size: int) -> bool:
    """What the README promises: at most about 4x the body, plus a few KiB."""
    return response_size <= 4 * body_size + 8 * 1024


async def post_batch(h: Harness, body: bytes, hung_after: float = 10) -> tuple[int, Any, bytes]:
    response = await h.request("POST", b"", "/analytics/batch", body=body, hung_after=hung_after)
    return response.status_code, response.headers, await response.get_data()


def forbid_line_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def judged(*args: object) -> object:
        raise AssertionError("a line was judged although the batch has too many lines")

    monkeypatch.setattr(batch_module, "_event", judged)
    monkeypatch.setattr(batch_module, "_all_valid_fast", judged)


@pytest.mark.parametrize("body", [
    b"x\n" * (MAX_LINES + 1),  # one too many, each ended by a newline
    b"x\n" * MAX_LINES + b"x",  # one too many, the last without its newline
    b"\n" * (16 * MIB - 1),  # 16 MiB of newlines: refused at C speed
], ids=["newline-ended", "unended-last", "16MiB-newlines"])
async def test_too_many_lines_is_413_before_any_line_is_judged(
    harness: Harness, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_line_work(monkeypatch)
    status, headers, answer = await post_batch(harness, body)
    assert status == 413, answer[:200]
    assert headers.get("Connection") == "close"  # like the 413 for too many bytes
    reason = json.loads(answer)["error"]
    assert "max_batch_lines" in reason and f"{MAX_LINES:,}" in reason
    assert await harness.counts(NOW_MS) == {"clicks": 0, "impressions": 0, "unique_users": 0}


async def test_max_batch_lines_lines_are_taken(harness: Harness) -> None:
    # A final newline ends the last line; it does not start another.
    body = b"\n".join(VALID % i for i in range(MAX_LINES)) + b"\n"
    status, _, answer = await post_batch(harness, body)
    assert status == 200, answer[:200]
    report = json.loads(answer)
    assert report["accepted"] == MAX_LINES and report["errors"] == []
    assert report["results"][:-1] == ["accepted"] * MAX_LINES and report["results"][-1] == "blank"


async def test_a_smaller_max_batch_lines_is_honoured(
    make_harness: Callable[..., AbstractAsyncContextManager[Harness]],
) -> None:
    async with make_harness(max_batch_lines=3) as h:
        status, _, answer = await post_batch(h, b"\n".join(VALID % i for i in range(4)))
        assert status == 413 and "3 lines" in json.loads(answer)["error"]
        status, _, answer = await post_batch(h, b"\n".join(VALID % i for i in range(3)))
        assert status == 200 and json.loads(answer)["accepted"] == 3


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_max_batch_bytes_is_413_with_or_without_a_declared_length(
    tmp_path: Path, declared: bool
) -> None:
    """The route reads the body as it arrives: the byte limit holds for a chunked body too."""
    chunks = [b"x\n" * 200] * 3  # 1,200 bytes
    headers = [(b"host", b"localhost")]
    if declared:
        headers.append((b"content-length", b"1200"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/analytics/batch",
             "raw_path": b"/analytics/batch", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("h", 80),
             "extensions": {}}
    sent: list[dict[str, Any]] = []
    done = trio.Event()

    async def receive() -> dict[str, Any]:
        if chunks:
            # A pause between chunks: the route takes each one before the next arrives, so
            # Quart's own buffer never holds more than the limit (its check does not fire).
            await trio.sleep(0.01)
            return {"type": "http.request", "body": chunks.pop(), "more_body": bool(chunks)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    async with running_app(tmp_path / "data", max_batch_bytes=1000) as h:
        with trio.fail_after(10):
            await h.app(scope, receive, send)
        assert sent[0]["status"] == 413, sent[0]
        assert (b"connection", b"close") in [(k.lower(), v) for k, v in sent[0]["headers"]]
        assert await h.counts(NOW_MS) == {"clicks": 0, "impressions": 0, "unique_users": 0}


HOSTILE = {
    "100k-invalid": b"x\n" * MAX_LINES,
    "100k-blank-and-one-event": b"\n" * (MAX_LINES - 1) + VALID % 1,
    "alternating-reasons": b"x\n1\n" * (MAX_LINES // 2),
    "invalid-between-blanks": b"x\n\n" * (MAX_LINES // 2),
    "16MiB-newlines": b"\n" * (16 * MIB - 1),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_the_answer_is_never_much_larger_than_the_body(
    harness: Harness, name: str
) -> None:
    body = HOSTILE[name]
    status, _, answer = await post_batch(harness, body)
    assert status in (200, 413)
    assert bounded(len(answer), len(body)), (len(answer), len(body))


async def test_16_mib_of_newlines_under_a_raised_limit_answers_compactly(
    make_harness: Callable[..., AbstractAsyncContextManager[Harness]],
) -> None:
    body = b"\n" * (16 * MIB - 1)
    async with make_harness(max_batch_lines=16 * MIB) as h:
        status, _, answer = await post_batch(h, body)
    assert status == 200
    report = json.loads(answer)
    assert report == {"accepted": 0, "rejected": 0, "failed": 0, "errors": []}
    assert len(answer) < 1024


async def test_grouped_errors_say_which_lines_and_why(harness: Harness) -> None:
    body = b"x\n1\n" * (MAX_LINES // 2)
    status, _, answer = await post_batch(harness, body)
    assert status == 200
    report = json.loads(answer)
    assert "results" not in report  # per-line verdicts would be 13x the body
    assert report["rejected"] == MAX_LINES and report["accepted"] == 0
    odd = ",".join(str(n) for n in range(1, MAX_LINES, 2))
    even = ",".join(str(n) for n in range(2, MAX_LINES + 1, 2))
    assert report["errors"] == [
        {"verdict": "rejected: not valid JSON", "count": MAX_LINES // 2, "lines": odd},
        {"verdict": "rejected: each line must be a JSON object", "count": MAX_LINES // 2,
         "lines": even},
    ]


async def test_the_event_loop_keeps_turning_during_a_maximal_hostile_batch(
    tmp_path: Path,
) -> None:
    """A ticker task notes the longest wait between its turns while a 16 MiB body of 100k
    lines that each need the per-line rules is judged and answered. Unbounded, that held the
    loop for seconds; in bounded steps the ticker runs between every two of them."""
    line = SLOW_BAD + b" " * (16 * MIB // MAX_LINES - len(SLOW_BAD) - 2)
    body = (line + b"\n") * MAX_LINES
    assert 15 * MIB < len(body) <= 16 * MIB
    async with running_app(tmp_path / "data") as h:
        ticks, longest = 0, 0.0
        done = False

        async def ticker() -> None:
            nonlocal ticks, longest
            last = trio.current_time()
            while not done:
                await trio.lowlevel.checkpoint()
                now = trio.current_time()
                longest = max(longest, now - last)
                last = now
                ticks += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()
            with trio.fail_after(120):
                response = await h.client.post("/analytics/batch", data=body)
            done = True
        assert response.status_code == 200
        assert json.loads(await response.get_data())["rejected"] == MAX_LINES
    # Deterministic: the loop was given back at least once per few hundred lines judged.
    assert ticks >= MAX_LINES // 1000, (ticks, longest)
    # Wall time, generous for a shared 2-core machine: unbounded it was over a second.
    assert longest < 0.2, longest


@pytest.mark.parametrize("name, body", [
    ("100k-invalid", b"x\n" * MAX_LINES),
    ("alternating-reasons", b"x\n1\n" * (MAX_LINES // 2)),
    ("valid-4MiB", b"\n".join(VALID % i for i in range(4 * MIB // 50))[:4 * MIB]
     .rpartition(b"\n")[0]),
    ("slow-invalid-4MiB", (SLOW_BAD + b"\n") * (4 * MIB // (len(SLOW_BAD) + 1))),
])
async def test_peak_memory_of_a_request_is_a_small_multiple_of_its_body(
    tmp_path: Path, name: str, body: bytes
) -> None:
    """Python allocations during one request (tracemalloc: every thread, the shard's commit
    included), beyond what was held before it, over the body's size. The README gives the
    figure; the test client's own copies of the body are part of what is measured."""
    async with running_app(tmp_path / "data") as h:
        await post_batch(h, VALID % 0)  # open the hour and warm up first
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            # tracemalloc makes the request several times slower: a long deadline.
            status, _, answer = await post_batch(h, body, hung_after=120)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert status == 200, answer[:200]
    # The README's figure: 4.5x the body plus 2 MiB (the constant covers the per-window and
    # per-run bookkeeping that a small body of one-character lines makes dominant).
    assert peak - before <= 4.5 * len(body) + 2 * MIB, (
        f"{name}: peak {peak - before:,} B for a {len(body):,} B body")


async def test_failed_hours_are_reported_per_line_across_pieces(
    make_harness: Callable[..., AbstractAsyncContextManager[Harness]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events go to the shards in pieces; a piece's failed hour fails exactly the lines of
    that hour in that piece, and the others are still counted."""
    from shardstats.core.events import HOUR_MS, EventColumns
    from shardstats.errors import ShardstatsError, StorageError
    from shardstats.http import batch as batch_route

    monkeypatch.setattr(batch_route, "PIECE_EVENTS", 1)  # pieces of max_commit_events (3)

    past = NOW_MS - HOUR_MS
    lines = [VALID % i if i % 2 else VALID.replace(b"%d" % NOW_MS, b"%d" % past) % i
             for i in range(7)]
    async with make_harness(max_commit_events=3) as h:  # pieces: lines 1-3, 4-6, 7
        real = h.service.submit_batch
        pieces: list[int] = []

        async def failing(events: EventColumns) -> dict[int, ShardstatsError | None]:
            pieces.append(len(events))
            outcome = await real(events)
            if "u4" in events.users:  # the second piece: its past-hour events "fail"
                outcome[past // HOUR_MS] = StorageError("disk on fire")
            return outcome

        monkeypatch.setattr(h.service, "submit_batch", failing)
        status, _, answer = await post_batch(h, b"\n".join(lines))
        assert status == 200 and sorted(pieces) == [1, 3, 3]
        report = json.loads(answer)
        # Pieces are lines 1-3, 4-6, 7; the past-hour lines are the odd ones (i even).
        assert report["results"] == ["accepted", "accepted", "accepted", "accepted",
                                     "failed: storage error", "accepted", "accepted"]
        assert report["errors"] == [{"verdict": "failed: storage error", "count": 1,
                                     "lines": "5"}]
        assert (report["accepted"], report["failed"]) == (6, 1)

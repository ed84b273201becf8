"""Batch ingest and range queries in the load generator: chunking, bodies, verdicts, the ledger,
range expectations; the batch sender against a scripted fake server (413 split, 503 retry,
failed lines resent, 404 fallback to single POSTs); and one end-to-end run against a real
server. Nothing here depends on timing.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Callable, Iterator, Sequence

import pytest
import trio
from pyroaring import BitMap

from tests.tools.fake_server import reply, serve_fake
from tools.loadgen import cli
from tools.loadgen.batch import BatchSource as Source
from tools.loadgen.batch import (
    Chunk,
    Verdict,
    fill_chunk,
    json_safe_prefix,
    parse_verdicts,
    plan_chunks,
    runs_of,
    settle,
)
from tools.loadgen.ledger import Counts, Ledger, check
from tools.loadgen.ranges import (
    RangeAnswer,
    compare_range,
    expected_range,
    range_target,
    segments,
)
from tools.loadgen.runner import BatchTally, FillReport, LoadSession, now_ms
from tools.loadgen.workload import HOUR_MS, FillPlan
from tools.spawn import ShardstatsServer

NOW = 1_795_802_400_000 + 1_234_567  # 20 min into an hour
CURRENT = NOW // HOUR_MS


def body_lines(chunk: Chunk) -> list[dict[str, object]]:
    return [json.loads(line) for line in chunk.body.split(b"\n")]


# -- plans and chunks -----------------------------------------------------------------------


@pytest.mark.parametrize("scatter", [False, True])
def test_block_is_event_in_bulk(scatter: bool) -> None:
    plan = FillPlan(CURRENT - 2, events=5_000, users=700, click_share=0.3, scatter=scatter)
    timestamps, users, clicks = plan.block(1_000, 3_000)
    assert len(timestamps) == len(users) == len(clicks) == 2_000
    for k, i in enumerate(range(1_000, 3_000)):
        event = plan.event(i)
        assert (timestamps[k], users[k], clicks[k]) == (event.timestamp_ms, event.user,
                                                        event.click)
    with pytest.raises(ValueError):
        plan.block(0, 5_001)


def test_scattered_hours_draw_from_the_pool_independently() -> None:
    a = FillPlan(CURRENT - 1, events=20_000, users=100_000, scatter=True)
    b = FillPlan(CURRENT - 2, events=20_000, users=100_000, scatter=True)
    ua, ub = set(a.block(0, a.events)[1]), set(b.block(0, b.events)[1])
    assert all(0 <= u < 100_000 for u in ua | ub)
    expected = 100_000 * -math.expm1(-0.2)  # 18,127 distinct expected per hour
    assert abs(len(ua) - expected) < 300 and abs(a.distinct_users - expected) < 1
    # Independent draws: the overlap is about |a|·|b|/pool, nothing like all or nothing.
    assert 0.5 * len(ua) * len(ub) / 100_000 < len(ua & ub) < 1.5 * len(ua) * len(ub) / 100_000


@pytest.mark.parametrize(("sizes", "chunk", "max_hours"), [
    ([10], 3, 8), ([100_000], 25_000, 8), ([7, 0, 5, 12], 10, 8), ([3] * 40, 25, 8),
    ([3] * 40, 1_000, 4), ([1, 1, 1], 1, 1), ([], 5, 2),
])
def test_plan_chunks_cover_every_event_once_in_order(sizes: list[int], chunk: int,
                                                     max_hours: int) -> None:
    plans = [FillPlan(CURRENT - 100 + k, n, 10) for k, n in enumerate(sizes)]
    chunks = plan_chunks(plans, chunk, max_hours)
    flat = [(p.plan, i) for pieces in chunks for p in pieces for i in range(p.start, p.stop)]
    assert flat == [(k, i) for k, n in enumerate(sizes) for i in range(n)]
    for pieces in chunks:
        assert pieces and 0 < sum(p.events for p in pieces) <= chunk
        assert len(pieces) <= max_hours
        assert all(p.events > 0 for p in pieces)
    # Chunks are full but for the last one, unless the hour limit cut them short.
    for pieces in chunks[:-1]:
        assert sum(p.events for p in pieces) == chunk or len(pieces) == max_hours
    with pytest.raises(ValueError):
        plan_chunks(plans, 0)


def test_fill_chunk_body_matches_the_plans() -> None:
    plans = [FillPlan(CURRENT - 3, 30, 7, click_share=0.5),
             FillPlan(CURRENT - 2, 20, 5, click_share=0.5, scatter=True)]
    (pieces,) = plan_chunks(plans, 100)
    chunk = fill_chunk(plans, pieces, json_safe_prefix("lg01-"))
    assert len(chunk) == 50
    assert chunk.runs == [(CURRENT - 3, 0, 30), (CURRENT - 2, 30, 50)]
    expected = [plans[0].event(i) for i in range(30)] + [plans[1].event(i) for i in range(20)]
    for line, event, hour in zip(body_lines(chunk), expected, chunk.hours, strict=True):
        assert line == {"timestamp": event.timestamp_ms, "user": f"lg01-{event.user}",
                        "event": "click" if event.click else "impression"}
        assert hour == event.hour
    assert not chunk.body.endswith(b"\n")


def test_prefix_is_escaped_for_json() -> None:
    plans = [FillPlan(CURRENT - 1, 2, 2)]
    chunk = fill_chunk(plans, plan_chunks(plans, 10)[0], json_safe_prefix('a"b\\c-'))
    assert [line["user"] for line in body_lines(chunk)] == ['a"b\\c-0', 'a"b\\c-1']


def test_split_and_subset_keep_lines_whole() -> None:
    plans = [FillPlan(CURRENT - 1, 9, 4), FillPlan(CURRENT, 4, 4)]
    chunk = fill_chunk(plans, plan_chunks(plans, 100)[0], "p-")
    left, right = chunk.split()
    assert len(left) + len(right) == 13
    assert body_lines(left) + body_lines(right) == body_lines(chunk)
    assert right.runs == [(CURRENT - 1, 0, 3), (CURRENT, 3, 7)]
    some = chunk.subset([0, 5, 12])
    assert body_lines(some) == [body_lines(chunk)[i] for i in (0, 5, 12)]
    assert (some.hours, some.users) == ([chunk.hours[i] for i in (0, 5, 12)],
                                        [chunk.users[i] for i in (0, 5, 12)])
    with pytest.raises(ValueError):
        some.subset([0]).split()


def test_runs_of() -> None:
    assert runs_of([]) == []
    assert runs_of([5, 5, 6, 5]) == [(5, 0, 2), (6, 2, 3), (5, 3, 4)]


def test_batch_source_draws_live_events_from_the_pool() -> None:
    source = Source(random.Random(1), 1_000, late_share=0.05, late_max_ms=60_000)
    chunk = source.chunk(NOW, 20_000, "s-")
    lines = body_lines(chunk)
    assert len(lines) == len(chunk) == 20_000
    stamps = [int(str(line["timestamp"])) for line in lines]
    assert all(NOW - 60_000 <= t <= NOW for t in stamps)
    assert sum(t < NOW - 20 for t in stamps) / 20_000 == pytest.approx(0.05, abs=0.01)
    assert chunk.hours == [t // HOUR_MS for t in stamps]
    assert all(0 <= u < 1_000 for u in chunk.users)
    assert sum(chunk.clicks) / 20_000 == pytest.approx(0.1, abs=0.01)
    assert max(set(chunk.users), key=chunk.users.count) == 0  # rank 0 is the most active
    again = Source(random.Random(1), 1_000).chunk(NOW, 20_000, "s-")
    assert again.body == chunk.body


# -- verdicts and the ledger ----------------------------------------------------------------


def answer(results: Sequence[object], **counts: object) -> bytes:
    summary: dict[str, object] = {k: sum(str(r).startswith(k) for r in results)
               for k in ("accepted", "rejected", "failed")}
    summary.update(counts)
    return json.dumps({**summary, "results": results}).encode()


def test_parse_verdicts_all_accepted_with_or_without_trailing_blank() -> None:
    for results in (["accepted"] * 3, ["accepted"] * 3 + ["blank"]):
        v = parse_verdicts(answer(results), 3)
        assert v.all_accepted and v.lines == [Verdict.ACCEPTED] * 3
        assert (v.accepted, v.rejected, v.failed) == (3, 0, 0)


def test_parse_verdicts_mixed_keeps_a_reason_per_kind() -> None:
    results = ["accepted", "rejected: 'user' must be a string", "failed: storage error",
               "accepted", "rejected: not valid JSON"]
    v = parse_verdicts(answer(results), 5)
    assert v.lines == [Verdict.ACCEPTED, Verdict.REJECTED, Verdict.FAILED, Verdict.ACCEPTED,
                       Verdict.REJECTED]
    assert (v.accepted, v.rejected, v.failed) == (2, 2, 1)
    assert v.reasons == {"rejected": "'user' must be a string", "failed": "storage error"}
    assert not v.all_accepted


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"accepted": 1}',
    answer(["accepted"] * 2),  # too few verdicts
    answer(["accepted"] * 4),  # too many
    answer(["accepted"] * 3 + ["blank", "blank"]),
    answer(["accepted", "blank", "accepted"]),  # an event line cannot be blank
    answer(["accepted", "maybe", "accepted"]),
    answer(["accepted", 7, "accepted"]),
    answer(["accepted"] * 3, accepted=2),  # counts disagree with the verdicts
    answer(["accepted"] * 3, failed=True),
])
def test_parse_verdicts_rejects_answers_that_do_not_add_up(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_verdicts(body, 3)


def two_hour_chunk() -> Chunk:
    hours = [CURRENT - 1] * 3 + [CURRENT] * 3
    users = [1, 2, 1, 1, 3, 4]
    clicks = [True, False, False, True, True, False]
    body = b"\n".join(b"{}" for _ in hours)
    return Chunk(hours, users, clicks, body)


def test_settle_all_accepted_files_runs_in_the_ledger() -> None:
    ledger = Ledger()
    chunk = two_hour_chunk()
    ledger.sent(len(chunk))
    verdicts = parse_verdicts(answer(["accepted"] * 6), 6)
    settled = settle(ledger, chunk, verdicts)
    assert (settled.accepted, settled.rejected, settled.unacknowledged) == (6, 0, 0)
    assert ledger.in_flight == 0
    result = check(ledger, {CURRENT - 1: Counts(2, 1, 2), CURRENT: Counts(3, 2, 1)})
    assert result.ok and result.exact and result.acknowledged == 6


def test_settle_whole_request_failure_leaves_everything_unacknowledged() -> None:
    ledger = Ledger()
    chunk = two_hour_chunk()
    ledger.sent(len(chunk))
    settled = settle(ledger, chunk, None)
    assert (settled.accepted, settled.rejected, settled.unacknowledged) == (0, 0, 6)
    assert ledger.in_flight == 0 and ledger.unacknowledged == 6
    # Stored or not, both are within bounds.
    assert check(ledger, {CURRENT - 1: Counts(), CURRENT: Counts()}).ok
    assert check(ledger, {CURRENT - 1: Counts(2, 1, 2), CURRENT: Counts(3, 2, 1)}).ok
    assert not check(ledger, {CURRENT - 1: Counts(3, 1, 2), CURRENT: Counts()}).ok


def test_settle_per_line_verdicts() -> None:
    ledger = Ledger()
    chunk = two_hour_chunk()
    ledger.sent(len(chunk))
    results = ["accepted", "rejected: no", "failed: storage error", "accepted", "accepted",
               "rejected: no"]
    settled = settle(ledger, chunk, parse_verdicts(answer(results), 6))
    assert (settled.accepted, settled.rejected, settled.unacknowledged) == (3, 2, 1)
    assert ledger.in_flight == 0
    past, now = ledger.hours[CURRENT - 1], ledger.hours[CURRENT]
    assert (past.acknowledged.clicks, past.acknowledged.impressions) == (1, 0)
    assert list(past.acknowledged.users) == [1]
    assert (past.sent.impressions, past.unacknowledged, list(past.sent.users)) == (1, 1, [1])
    assert (now.acknowledged.clicks, list(now.acknowledged.users)) == (2, [1, 3])
    assert now.sent.events == 2 and now.unacknowledged == 0  # the rejected line widens no bound
    assert check(ledger, {CURRENT - 1: Counts(1, 1, 0), CURRENT: Counts(2, 2, 0)}).exact is False
    assert check(ledger, {CURRENT - 1: Counts(1, 1, 1), CURRENT: Counts(2, 2, 0)}).ok
    assert not check(ledger, {CURRENT - 1: Counts(1, 1, 0), CURRENT: Counts(3, 2, 1)}).ok


# -- range expectations ---------------------------------------------------------------------


def test_range_target_and_segments() -> None:
    assert range_target(10, 12) == (f"/analytics/range?from={10 * HOUR_MS}&to="
                                    f"{13 * HOUR_MS - 1}&step=hour")
    assert segments(20, 22, "hour") == [range(20, 21), range(21, 22), range(22, 23)]
    assert segments(20, 50, "day") == [range(20, 24), range(24, 48), range(48, 51)]
    assert segments(24, 47, "day") == [range(24, 48)]
    days = segments(5, 5 + 719, "day")
    assert sum(len(d) for d in days) == 720 and len(days) == 31
    with pytest.raises(ValueError):
        range_target(3, 2)
    with pytest.raises(ValueError):
        segments(1, 2, "week")


def random_ledger(rng: random.Random, hours: range
                  ) -> tuple[Ledger, dict[int, list[tuple[int, bool]]]]:
    ledger = Ledger()
    events: dict[int, list[tuple[int, bool]]] = {}
    for hour in hours:
        for _ in range(rng.randrange(0, 30)):
            user, click = rng.randrange(50), rng.random() < 0.3
            ledger.sent()
            ledger.settle(hour, user, click, acknowledged=True)
            events.setdefault(hour, []).append((user, click))
    return ledger, events


@pytest.mark.parametrize("seed", range(5))
def test_expected_range_is_the_union_of_sets(seed: int) -> None:
    rng = random.Random(seed)
    first, last = 24 * 1000 + rng.randrange(24), 24 * 1003 + rng.randrange(24)
    ledger, events = random_ledger(rng, range(first - 3, last + 4))

    def model(hours: range) -> Counts:
        lines = [e for h in hours for e in events.get(h, [])]
        return Counts(len({u for u, _ in lines}), sum(c for _, c in lines),
                      sum(not c for _, c in lines))

    for step in ("hour", "day"):
        got = expected_range(ledger, first, last, step)
        assert got is not None
        assert got.total == model(range(first, last + 1))
        assert [s for s, _ in got.series] == [seg.start * HOUR_MS
                                              for seg in segments(first, last, step)]
        assert [c for _, c in got.series] == [model(seg) for seg in segments(first, last,
                                                                             step)]


def test_expected_range_needs_an_exact_ledger() -> None:
    ledger = Ledger()
    ledger.sent(2)
    ledger.settle(100, 1, True, acknowledged=True)
    ledger.settle(101, 2, True, acknowledged=False)
    assert expected_range(ledger, 100, 100, "hour") is not None
    assert expected_range(ledger, 100, 101, "hour") is None
    assert expected_range(ledger, 100, 100, "hour", {100: Counts(1, 0, 1)}) is None
    assert expected_range(ledger, 100, 100, "hour", {100: Counts()}) is not None


def test_range_answer_parsing_and_comparison() -> None:
    data = {"from": 0, "to": 1, "step": "hour",
            "total": {"unique_users": 2, "clicks": 1, "impressions": 1},
            "series": [{"start": 0, "unique_users": 1, "clicks": 1, "impressions": 0},
                       {"start": HOUR_MS, "unique_users": 1, "clicks": 0, "impressions": 1}]}
    answer = RangeAnswer.from_json(data)
    assert answer.total == Counts(2, 1, 1) and len(answer.series) == 2
    assert compare_range(answer, answer) == []
    other = RangeAnswer(Counts(3, 1, 1), (answer.series[0], (HOUR_MS, Counts(2, 0, 1))))
    problems = compare_range(answer, other)
    assert len(problems) == 2 and problems[0].startswith("total")
    assert compare_range(answer, RangeAnswer(answer.total, answer.series[:1]))[0].startswith(
        "series")
    for bad in ({}, {"total": data["total"]}, {"total": data["total"], "series": [{}]},
                {"total": data["total"], "series": [{"start": "0", "unique_users": 1,
                                                     "clicks": 0, "impressions": 0}]}):
        with pytest.raises(ValueError):
            RangeAnswer.from_json(bad)


def test_ledger_user_sets_are_bitmaps() -> None:
    ledger = Ledger()
    ledger.sent(5)
    ledger.settle_many(7, [1, 2, 2, 3], clicks=1, impressions=3, acknowledged=True)
    ledger.refused(1)
    assert ledger.in_flight == 0
    assert ledger.hours[7].acknowledged.users == BitMap([1, 2, 3])
    assert check(ledger, {7: Counts(3, 1, 3)}).exact


# -- the batch sender against a scripted server ---------------------------------------------

Handler = Callable[[str, str, bytes], tuple[int, bytes]]  # (method, target, body) -> answer


def run_against(handler: Handler, scenario: Callable[[LoadSession], object]) -> object:
    async def main() -> object:
        async with trio.open_nursery() as nursery:
            def respond(head: list[str], body: bytes) -> bytes:
                method, target, _ = head[0].split(" ")
                return reply(*handler(method, target, body))

            port = await nursery.start(serve_fake, respond)
            session = LoadSession(f"http://127.0.0.1:{port}", seed=1, progress=None,
                                  timeout=5.0, baseline={})
            try:
                result = await scenario(session)  # type: ignore[misc]
            except Exception as exc:  # raised below, outside the nursery's exception group
                result = exc
            nursery.cancel_scope.cancel()
            return result

    result = trio.run(main)
    if isinstance(result, Exception):
        raise result
    return result


class Script:
    """The fake server's batch behaviour; counts what it stored, line by line."""

    def __init__(self, max_body: int = 10**9, fail_503: int = 0,
                 fail_line: Callable[[dict[str, object]], bool] | None = None) -> None:
        self.max_body = max_body
        self.fail_503 = fail_503
        self.fail_line = fail_line
        self.stored: list[dict[str, object]] = []
        self.bodies: list[int] = []
        self.posts = 0

    def __call__(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        if target != "/analytics/batch":
            return 404, b"{}"
        if not body:
            return 200, b'{"accepted":0,"rejected":0,"failed":0,"results":["blank"]}'
        self.bodies.append(len(body))
        if len(body) > self.max_body:
            return 413, b'{"error":"too large"}'
        if self.fail_503:
            self.fail_503 -= 1
            return 503, b'{"error":"recovering"}'
        results = []
        for raw in body.split(b"\n"):
            line = json.loads(raw)
            if self.fail_line is not None and self.fail_line(line):
                results.append("failed: storage error")
            else:
                self.stored.append(line)
                results.append("accepted")
        return 200, answer(results)


PLANS = [FillPlan(CURRENT - 3, 500, 40), FillPlan(CURRENT - 2, 300, 1000, scatter=True)]


def stored_counts(stored: list[dict[str, object]]) -> dict[int, Counts]:
    out: dict[int, Counts] = {}
    by_hour = itertools.groupby(sorted(stored, key=lambda e: int(str(e["timestamp"]))),
                                key=lambda e: int(str(e["timestamp"])) // HOUR_MS)
    for hour, group in by_hour:
        lines = list(group)
        clicks = sum(e["event"] == "click" for e in lines)
        out[hour] = Counts(len({e["user"] for e in lines}), clicks, len(lines) - clicks)
    return out


def fill_with(script: Handler, plans: list[FillPlan], chunk: int
              ) -> tuple[FillReport, LoadSession]:
    sessions: list[LoadSession] = []

    async def scenario(session: LoadSession) -> object:
        sessions.append(session)
        return await session.prepopulate(plans, connections=2, chunk_events=chunk,
                                         check_after=False, retries_503=3)

    report = run_against(script, scenario)
    assert isinstance(report, FillReport)
    return report, sessions[0]


def test_fill_splits_on_413_and_retries_503() -> None:
    script = Script(max_body=12_000, fail_503=2)
    report, session = fill_with(script, PLANS, 400)
    assert report.method == "batch"
    t = report.tally
    assert (t.sent, t.accepted, t.rejected) == (800, 800, 0)
    assert t.retried_503 == 2
    assert t.split > 0 and max(script.bodies) > 12_000
    assert len(script.stored) == 800
    # What the server stored is exactly what the ledger acknowledged.
    result = check(session.ledger, stored_counts(script.stored))
    assert result.ok and result.exact and session.ledger.in_flight == 0


def test_failed_lines_are_resent_and_bound_the_check() -> None:
    seen: set[str] = set()

    def fail_first_time(line: dict[str, object]) -> bool:
        key = json.dumps(line, sort_keys=True)
        if str(line["user"]).endswith("7") and key not in seen:
            seen.add(key)
            return True
        return False

    script = Script(fail_line=fail_first_time)
    report, session = fill_with(script, PLANS, 250)
    ledger = session.ledger
    assert report.tally.sent == 800 and report.tally.resent == len(seen) > 0
    assert len(script.stored) == 800  # every line got in on its second try
    assert ledger.in_flight == 0
    assert ledger.acknowledged == 800 and ledger.unacknowledged == len(seen)
    result = check(ledger, stored_counts(script.stored))
    assert result.ok and not result.exact  # the failed tries widen the bounds


def test_fill_falls_back_to_single_posts_on_404() -> None:
    posts: list[str] = []

    def no_batch(method: str, target: str, body: bytes) -> tuple[int, bytes]:
        if target.startswith("/analytics?"):
            posts.append(target)
            return 204, b""
        return 404, b"{}"

    report, _ = fill_with(no_batch, [FillPlan(CURRENT - 5, 30, 10)], 100)
    assert report.method == "single"
    assert report.tally.accepted == 30 and len(posts) == 30
    assert all(re.fullmatch(r"/analytics\?timestamp=\d+&user=lg[0-9a-f]{8}-\d+&event="
                            r"(click|impression)", p) for p in posts)


def test_batch_probe_refuses_other_statuses() -> None:
    def unauthorized(method: str, target: str, body: bytes) -> tuple[int, bytes]:
        return 401, b'{"error":"missing or invalid bearer token"}'

    with pytest.raises(RuntimeError, match="401"):
        run_against(unauthorized, lambda s: s.batch_supported())


def test_whole_request_4xx_is_refused_5xx_unacknowledged() -> None:
    for status, refused in ((400, True), (500, False)):

        def fixed(method: str, target: str, body: bytes, status: int = status
                  ) -> tuple[int, bytes]:
            return (200, answer([])) if not body else (status, b"{}")

        async def scenario(session: LoadSession) -> Ledger:
            chunk = Chunk([CURRENT] * 3, [1, 2, 3], [True, False, False],
                          b"\n".join([b"{}"] * 3))
            session.ledger.sent(3)
            tally = BatchTally()
            conn = session._connection()
            await session.send_batch(conn, chunk, tally)
            conn.close()
            return session.ledger

        ledger = run_against(fixed, scenario)
        assert isinstance(ledger, Ledger)
        assert ledger.in_flight == 0
        assert ledger.unacknowledged == (0 if refused else 3)
        assert ledger.acknowledged == 0


# -- end to end -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("loadgen-batch-e2e")
    with ShardstatsServer(tmp / "data", tmp / "server.log",
                          {"SHARDSTATS_MAX_BATCH_BYTES": "200000"}) as server:
        yield server.url


@pytest.mark.e2e
def test_batch_fill_and_ranges_read_back_exactly(server_url: str) -> None:
    """Fill 30 past hours through the batch endpoint (with a 200 kB body limit, so chunks
    of 5,000 events get 413 and are split), then check the range answers against the
    ledger, and a short batch throughput run against its read-back."""

    async def scenario() -> None:
        session = LoadSession(server_url, seed=3, progress=None, baseline={})
        current = now_ms() // HOUR_MS
        first, last = current - 40, current - 11
        plans = [FillPlan(h, 400, 3_000, scatter=True) for h in range(first, last + 1)]
        report = await session.prepopulate(plans, connections=2, chunk_events=5_000)
        assert report.method == "batch" and report.check is not None
        assert report.check.ok and report.check.exact, report.as_dict()
        assert report.tally.accepted == 30 * 400 and report.tally.rejected == 0
        assert report.tally.split > 0  # 5,000 events do not fit in 200 kB
        for step in ("hour", "day"):
            want = expected_range(session.ledger, first, last, step)
            assert want is not None
            got = await session.fetch_range(first, last, step)
            assert compare_range(want, got) == []
        ranges, gets = await session.range_loop(first, last, "day", 0.3, warmup=0.0,
                                                get_rate=20)
        assert ranges.errors == 0 and ranges.total.ok > 0
        assert gets is not None and gets.errors == 0

        live = LoadSession(server_url, seed=4, progress=None)
        await live.read_baseline(live.window_hours(2.0)[-3:])
        batch = await live.batch_loop(2, 0.5, batch_events=500, pool=2_000)
        assert batch.load.check is not None and batch.load.check.exact, batch.as_dict()
        assert batch.tally.accepted == batch.tally.sent > 0
        assert batch.distinct_in_window >= batch.new_in_window

    trio.run(scenario)



@pytest.mark.e2e
def test_cli_batch_prepopulate_and_range_commands(server_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["prepopulate", server_url, "--hours", "3", "--first-age", "100",
                     "--events", "700", "--users", "5000", "--scatter", "--chunk-events", "500",
                     "--quiet", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 0, out
    assert report["method"] == "batch" and report["events_accepted"] == 2_100
    assert report["requests"] == 5 and report["check"]["exact"]
    code = cli.main(["batch", server_url, "--connections", "1", "--batch-events", "300",
                     "--duration", "0.3", "--warmup", "0", "--users", "1000", "--quiet",
                     "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 0, out
    assert report["events_accepted"] == report["events_sent"] > 0
    assert report["check"]["exact"] and report["classes"]["POST batch"]["ok"] > 0
    code = cli.main(["range", server_url, "--hours", "200", "--step", "day", "--duration",
                     "0.3", "--get-rate", "20", "--quiet", "--json", "--fail-on-errors"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 0, out
    assert report["range"]["classes"]["GET range day"]["ok"] > 0
    assert report["get_current"]["classes"]["GET current"]["errors"] == 0


def test_cli_parses_the_new_commands() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["batch", "http://h:1"])
    assert (args.connections, args.batch_events, args.users) == (4, 10_000, 1_000_000)
    args = parser.parse_args(["range", "http://h:1", "--step", "day"])
    assert (args.hours, args.step, args.get_rate) == (720, "day", 0.0)
    args = parser.parse_args(["prepopulate", "http://h:1", "--single"])
    assert args.single and args.connections == 4 and args.chunk_events == 25_000
    with pytest.raises(SystemExit):
        parser.parse_args(["range", "http://h:1", "--step", "week"])

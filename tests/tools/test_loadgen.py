"""The load generator's own logic: traffic shape, percentiles, read-back check, HTTP client.

Distribution tests draw enough samples from a seeded RNG that the tolerances are many
standard deviations wide; nothing here depends on timing. One end-to-end test runs the load
generator for about two seconds against a real server.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
import trio

from tests.tools.fake_server import reply, serve_fake
from tools.loadgen import cli, runner
from tools.loadgen.client import Connection, Endpoint, TransportError
from tools.loadgen.ledger import Counts, Event, Ledger, check
from tools.loadgen.runner import LoadSession, event_target, fill_plans
from tools.loadgen.stats import Recorder, percentiles, summarize
from tools.loadgen.workload import (
    HOUR_MS,
    FillPlan,
    HourTemperature,
    PlannedEvent,
    RequestClass,
    Workload,
    WorkloadConfig,
    ZipfSampler,
    arrivals,
    coprime_stride,
    past_hour_weights,
)
from tools.spawn import ShardstatsServer

NOW = 1_795_802_400_000 + 1_234_567  # a fixed instant, 20 min into an hour
CURRENT = NOW // HOUR_MS


def within(observed: float, expected: float, n: int, sigmas: float = 5.0) -> bool:
    """A frequency observed in ``n`` Bernoulli trials is within ``sigmas`` of ``expected``."""
    sd = math.sqrt(expected * (1 - expected) / n)
    return abs(observed - expected) <= sigmas * sd + 1e-12


# -- workload shape -------------------------------------------------------------------------


def test_past_hour_weights_fall_off_as_a_power_of_age() -> None:
    w = past_hour_weights(48, 1.5)
    assert len(w) == 48
    assert math.isclose(sum(w), 1.0)
    assert all(a > b for a, b in itertools.pairwise(w))
    assert math.isclose(w[0] / w[1], 2**1.5)
    assert math.isclose(w[0] / w[47], 48**1.5)


def test_hour_ages_95_percent_current_rest_weighted_by_age() -> None:
    n = 400_000
    workload = Workload(WorkloadConfig(), random.Random(1))
    ages = Counter(workload.age() for _ in range(n))
    assert within(ages[0] / n, 0.95, n)
    assert set(ages) <= set(range(49))
    past = n - ages[0]
    weights = past_hour_weights(48, 1.5)
    for age in (1, 2, 3, 5, 10):
        assert within(ages[age] / past, weights[age - 1], past), age
    # The tail is rare but reachable.
    assert sum(ages[a] for a in range(25, 49)) > 0


def test_zipf_users_follow_the_power_law() -> None:
    sampler = ZipfSampler(1000, 1.1)
    assert math.isclose(sum(sampler.probability(k) for k in range(1000)), 1.0)
    rng = random.Random(2)
    n = 300_000
    ranks = Counter(sampler.sample(rng) for _ in range(n))
    assert min(ranks) >= 0 and max(ranks) < 1000
    for rank in (0, 1, 9, 99):
        assert within(ranks[rank] / n, sampler.probability(rank), n), rank
    assert ranks[0] / ranks[1] == pytest.approx(2**1.1, rel=0.05)


def test_posts_mostly_in_order_clicks_and_impressions_mixed() -> None:
    config = WorkloadConfig(users=500, late_share=0.05, late_mean_ms=2000, late_max_ms=60_000)
    workload = Workload(config, random.Random(3))
    n = 50_000
    events = [workload.post(NOW + i) for i in range(n)]  # one event per ms of wall time
    current = [e for e in events if e.hour == CURRENT]
    assert within(len(current) / n, 0.95, n)
    for e in events:
        assert e.timestamp_ms <= NOW + n
        assert e.hour == e.timestamp_ms // HOUR_MS
        assert 0 <= e.user < 500
        assert CURRENT - 48 <= e.hour <= CURRENT
    for i, e in enumerate(events):
        if e.hour == CURRENT:
            assert NOW + i - config.late_max_ms <= e.timestamp_ms <= NOW + i
    inversions = sum(a.timestamp_ms > b.timestamp_ms for a, b in itertools.pairwise(current))
    share = inversions / len(current)
    assert 0.02 < share < 0.5  # mostly, not strictly, in order
    clicks = sum(e.click for e in events)
    assert within(clicks / n, 0.1, n)


def test_gets_target_the_same_hour_mix() -> None:
    workload = Workload(WorkloadConfig(), random.Random(4))
    n = 100_000
    queries = [workload.get(NOW) for _ in range(n)]
    assert within(sum(q.hour == CURRENT for q in queries) / n, 0.95, n)
    for q in queries:
        assert q.hour == q.timestamp_ms // HOUR_MS
        assert CURRENT - 48 <= q.hour <= CURRENT


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        WorkloadConfig(past_share=1.5)
    with pytest.raises(ValueError):
        WorkloadConfig(users=0)


def test_temperature_cold_only_on_first_touch() -> None:
    t = HourTemperature(warm=[CURRENT - 5])
    assert t.classify_get(CURRENT, CURRENT) is RequestClass.GET_CURRENT
    assert t.classify_get(CURRENT - 1, CURRENT) is RequestClass.GET_PAST_COLD
    assert t.classify_get(CURRENT - 1, CURRENT) is RequestClass.GET_PAST_WARM
    assert t.classify_get(CURRENT - 5, CURRENT) is RequestClass.GET_PAST_WARM
    t.touch(CURRENT - 2)  # a POST loads the hour too
    assert t.classify_get(CURRENT - 2, CURRENT) is RequestClass.GET_PAST_WARM


def test_poisson_arrivals_rate_and_mix() -> None:
    times = list(arrivals(random.Random(5), 1000.0, 250.0, 200.0))
    n = len(times)
    expected = 1250 * 200
    assert abs(n - expected) < 5 * math.sqrt(expected)
    assert all(0 <= t < 200.0 for t, _ in times)
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(times))
    assert within(sum(g for _, g in times) / n, 0.2, n)


def test_uniform_arrivals_are_evenly_spaced_and_interleaved() -> None:
    times = list(arrivals(random.Random(6), 100.0, 20.0, 10.0, poisson=False))
    assert len(times) == 1200
    assert times[0][0] == 0.0
    assert all(math.isclose(b - a, 1 / 120) for (a, _), (b, _) in itertools.pairwise(times))
    gets = 0
    for k, (_, is_get) in enumerate(times, start=1):
        gets += is_get
        assert abs(gets - k / 6) <= 1  # every prefix holds its share of GETs
    assert gets == 200
    assert list(arrivals(random.Random(0), 0, 0, 10)) == []


def test_fill_plan_covers_users_in_time_order() -> None:
    plan = FillPlan(CURRENT - 3, events=10_000, users=1_234, click_share=0.25)
    events = [plan.event(i) for i in range(plan.events)]
    assert len({e.user for e in events}) == 1_234 == plan.distinct_users
    assert len({e.user for e in events[:1_234]}) == 1_234  # each user once, first
    start = plan.hour * HOUR_MS
    assert all(start <= e.timestamp_ms < start + HOUR_MS for e in events)
    assert all(a.timestamp_ms <= b.timestamp_ms for a, b in itertools.pairwise(events))
    assert abs(sum(e.click for e in events) / plan.events - 0.25) < 0.01
    assert FillPlan(CURRENT, events=10, users=100).distinct_users == 10


@pytest.mark.parametrize("n", [1, 2, 3, 10, 12, 100, 1000, 1024, 100_000])
def test_coprime_stride_permutes(n: int) -> None:
    step = coprime_stride(n)
    assert math.gcd(step, n) == 1
    if n <= 1024:
        assert sorted((i * step) % n for i in range(n)) == list(range(n))


def test_fill_plans_oldest_first_current_last() -> None:
    plans = fill_plans(3, 100, 10, include_current=True, now=NOW)
    assert [p.hour for p in plans] == [CURRENT - 3, CURRENT - 2, CURRENT - 1, CURRENT]
    current = plans[-1]
    assert current.span_ms == NOW - CURRENT * HOUR_MS
    assert all(current.event(i).timestamp_ms <= NOW for i in range(100))


def test_user_ids_are_url_safe() -> None:
    target = event_target("lgab12-", PlannedEvent(CURRENT, NOW, 42, True))
    assert target == f"/analytics?timestamp={NOW}&user=lgab12-42&event=click"


# -- percentiles and rates ------------------------------------------------------------------


def test_percentiles_interpolate_between_samples() -> None:
    ten = [float(i) for i in range(10, 0, -1)]  # unsorted on purpose
    assert percentiles(ten) == pytest.approx((5.5, 9.1, 9.91))
    hundred = [float(i) for i in range(1, 101)]
    assert percentiles(hundred) == pytest.approx((50.5, 90.1, 99.01))
    assert percentiles([7.0]) == (7.0, 7.0, 7.0)
    assert percentiles([1.0, 3.0]) == pytest.approx((2.0, 2.8, 2.98))
    with pytest.raises(ValueError):
        percentiles([])


def test_summary_in_milliseconds_errors_apart() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = summarize(latencies, Counter({"HTTP 503": 3}), completed_in_window=50, window_s=2.0)
    assert (s.requests, s.ok, s.errors) == (103, 100, 3)
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert s.max_ms == pytest.approx(100.0)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.rate == 25.0
    assert s.as_dict()["rate_per_s"] == 25.0 and s.as_dict()["p99_ms"] == 99.01
    empty = summarize([], Counter({"timeout": 1}), 0, 1.0)
    assert empty.p99_ms is None and empty.errors == 1


def test_recorder_skips_warmup_and_counts_rate_in_window() -> None:
    r = Recorder(start=10.0, end=20.0)
    r.record(RequestClass.POST, 9.0, 10.5, None)  # sent during warm-up: ignored
    r.record(RequestClass.POST, 10.0, 10.002, None)
    r.record(RequestClass.POST, 19.9, 20.5, None)  # completes after the window
    r.record(RequestClass.GET_CURRENT, 11.0, 11.001, "HTTP 500")
    summary = r.summary()
    post = summary[RequestClass.POST]
    assert post.ok == 2
    assert post.rate == pytest.approx(1 / 10)
    assert post.max_ms == pytest.approx(600.0)
    assert summary[RequestClass.GET_CURRENT].errors == 1
    assert summary[RequestClass.GET_CURRENT].error_kinds == {"HTTP 500": 1}
    assert r.total().requests == 3
    assert (r.done, r.failed) == (4, 1)


def test_recorder_merges_classes() -> None:
    r = Recorder(start=0.0, end=10.0)
    for i in range(1, 51):
        r.record(RequestClass.GET_PAST_COLD, 1.0, 1.0 + i / 1000, None)  # 1..50 ms
        r.record(RequestClass.GET_PAST_WARM, 1.0, 1.0 + (50 + i) / 1000, None)  # 51..100 ms
    past = r.merged([RequestClass.GET_PAST_COLD, RequestClass.GET_PAST_WARM])
    assert past.ok == 100
    assert (past.p50_ms, past.p99_ms) == pytest.approx((50.5, 99.01))
    assert r.summary()[RequestClass.GET_PAST_COLD].p99_ms == pytest.approx(49.51)


# -- the read-back check --------------------------------------------------------------------


def ledger_of(*events: tuple[int, int, bool, bool]) -> Ledger:
    ledger = Ledger()
    for hour, user, click, ack in events:
        ledger.sent()
        ledger.settle(hour, user, click, acknowledged=ack)
    return ledger


def test_check_exact_when_everything_was_acknowledged() -> None:
    ledger = ledger_of((1, 1, True, True), (1, 2, False, True), (1, 1, False, True),
                       (2, 3, True, True))
    observed = {1: Counts(2, 1, 2), 2: Counts(1, 1, 0)}
    result = check(ledger, observed)
    assert result.ok and result.exact and not result.problems
    assert (result.acknowledged, result.unacknowledged) == (4, 0)
    assert ledger.in_flight == 0


def test_check_detects_lost_events() -> None:
    ledger = ledger_of((1, 1, True, True), (1, 2, False, True))
    result = check(ledger, {1: Counts(2, 1, 0)})
    assert not result.ok
    (problem,) = result.problems
    assert "LOST" in problem and "impressions" in problem and "1 missing" in problem
    # A lost user shows too, even when the event totals happen to match.
    result = check(ledger, {1: Counts(1, 1, 1)})
    assert not result.ok and "unique_users" in result.problems[0]


def test_check_detects_invented_events() -> None:
    ledger = ledger_of((1, 1, True, True))
    result = check(ledger, {1: Counts(1, 2, 0)})
    assert not result.ok
    assert "INVENTED" in result.problems[0] and "clicks" in result.problems[0]
    # An hour the run never wrote must keep its baseline.
    result = check(ledger, {1: Counts(1, 1, 0), 7: Counts(1, 0, 1)}, {7: Counts()}, also=[7])
    assert not result.ok and result.problems[0].startswith("hour 7: INVENTED")


def test_check_unacknowledged_events_widen_the_bounds() -> None:
    # One acknowledged click by user 1, one failed impression by user 2 (may or may not land).
    ledger = ledger_of((1, 1, True, True), (1, 2, False, False))
    assert check(ledger, {1: Counts(1, 1, 0)}).ok
    assert check(ledger, {1: Counts(2, 1, 1)}).ok
    assert not check(ledger, {1: Counts(0, 1, 0)}).ok  # lost the acknowledged user
    assert not check(ledger, {1: Counts(3, 1, 1)}).ok  # more users than ever sent
    assert not check(ledger, {1: Counts(2, 1, 2)}).ok  # more impressions than ever sent
    assert not check(ledger, {1: Counts(1, 1, 0)}).exact


def test_check_adds_the_baseline_and_fails_unreadable_hours() -> None:
    ledger = ledger_of((5, 1, False, True))
    baseline = {5: Counts(10, 3, 20)}
    assert check(ledger, {5: Counts(11, 3, 21)}, baseline).ok
    assert not check(ledger, {5: Counts(1, 0, 1)}, baseline).ok
    result = check(ledger, {}, baseline)
    assert not result.ok and "could not be read back" in result.problems[0]


def test_two_step_filing_with_names_and_event_ids() -> None:
    """The e2e tests' and the soak's way: sent before the request, acked on its answer."""
    ledger = Ledger()
    hour_ms = 7 * HOUR_MS
    events = [Event(hour_ms + 1, "é", "click"), Event(hour_ms + 2, "e\u0301", "impression"),
              Event(hour_ms + 3, "é", "impression")]
    for event in events:
        ledger.record_sent(event)
    ledger.record_acked(events[0])
    # While the other two are in flight the server may count them, or not.
    assert check(ledger, {7: Counts(1, 1, 0)}).ok
    assert check(ledger, {7: Counts(2, 1, 2)}).ok
    assert not check(ledger, {7: Counts(3, 1, 2)}).ok  # two distinct names, not three
    assert check(ledger, {7: Counts(1, 1, 0)}).exact is False
    # An id is filed once however often it is sent and acknowledged.
    again = Event(hour_ms + 4, "x", "click")
    for _ in range(3):
        ledger.record_sent(again, eid="id-1")
        ledger.record_acked(again, eid="id-1")
    assert ledger.hours[7].acknowledged.counts() == Counts(2, 2, 0)
    assert ledger.hours[7].sent.counts() == Counts(3, 2, 2)
    assert (ledger.acknowledged, ledger.unacknowledged) == (2, 2)


def test_one_ledger_takes_one_kind_of_user() -> None:
    ledger = ledger_of((1, 1, True, True))
    with pytest.raises(TypeError):
        ledger.record_sent(Event(HOUR_MS, "alice", "click"))
    named = Ledger()
    named.record_sent(Event(HOUR_MS, "alice", "click"))
    with pytest.raises(TypeError):
        named.settle(1, 5, True, acknowledged=True)


def test_counts_from_json_is_strict() -> None:
    assert Counts.from_json({"unique_users": 1, "clicks": 2, "impressions": 3}) == Counts(1, 2, 3)
    bad: object
    for bad in ([], {"clicks": 1}, {"unique_users": -1, "clicks": 0, "impressions": 0},
                {"unique_users": True, "clicks": 0, "impressions": 0}):
        with pytest.raises(ValueError):
            Counts.from_json(bad)


# -- the HTTP client ------------------------------------------------------------------------


def scripted(answers: list[bytes], seen: list[bytes]) -> Callable[[list[str], bytes], bytes]:
    """A fake server's handler: the next of ``answers`` to each request (recorded in ``seen``)."""

    def handler(head: list[str], body: bytes) -> bytes:
        seen.append("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        return answers.pop(0)

    return handler


async def test_client_keeps_connections_alive_and_reads_every_framing() -> None:
    answers = [
        b"HTTP/1.1 204 \r\ndate: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n"
        b"0\r\n\r\n",
        b"HTTP/1.1 503 \r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",  # a body delimited by the close
        b"HTTP/1.1 200 \r\ncontent-length: 13\r\n\r\n{\"clicks\": 1}",
    ]
    seen: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake, scripted(answers, seen))
        conn = Connection(Endpoint.parse(f"http://127.0.0.1:{port}"))
        got = [await conn.request("POST", "/a?b=1"), await conn.request("GET", "/c"),
               await conn.request("POST", "/analytics/batch", b'{"a":1}\n{"b":2}'),
               await conn.request("GET", "/d"), await conn.request("GET", "/e")]
        conn.close()
        nursery.cancel_scope.cancel()
    assert [(r.status, r.body) for r in got] == [
        (204, b""), (200, b"abcdefg"), (503, b""), (200, b"until close"),
        (200, b'{"clicks": 1}')]
    assert got[2].headers[b"retry-after"] == b"1"
    assert conn.connects == 3  # one kept alive for three requests, then one per close
    host = f"Host: 127.0.0.1:{port}".encode()
    assert seen[0] == b"POST /a?b=1 HTTP/1.1\r\n" + host + b"\r\nContent-Length: 0\r\n\r\n"
    assert seen[1] == b"GET /c HTTP/1.1\r\n" + host + b"\r\n\r\n"
    assert seen[2] == (b"POST /analytics/batch HTTP/1.1\r\n" + host + b"\r\nContent-Type: "
                       b"application/x-ndjson\r\nContent-Length: 15\r\n\r\n"
                       b'{"a":1}\n{"b":2}')


async def test_client_turns_garbage_and_truncation_into_transport_errors() -> None:
    answers = [b"SMTP ready\r\n\r\n",
               b"HTTP/1.1 200 \r\nconnection: close\r\ncontent-length: 10\r\n\r\nabc"]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake, scripted(answers, []))
        conn = Connection(Endpoint.parse(f"127.0.0.1:{port}"))
        for _ in range(2):
            with pytest.raises(TransportError):
                await conn.request("GET", "/")
        nursery.cancel_scope.cancel()
    with pytest.raises(TransportError, match="connect to"):
        await Connection(Endpoint("127.0.0.1", port)).request("GET", "/")


# -- open loop ----------------------------------------------------------------------------


async def test_open_loop_gives_each_connection_one_worker_when_late_from_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dispatcher already late at its first arrival (a busy machine) opens connections
    before the first workers start; still exactly one worker per connection."""

    class LateStart(runner.Stopwatch):
        def __init__(self) -> None:
            super().__init__()
            self.t0 -= 0.5  # every arrival of the 0.5 s run is due at once

    monkeypatch.setattr(runner, "Stopwatch", LateStart)
    counts = b'{"unique_users": 0, "clicks": 0, "impressions": 0}'
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake, lambda head, body: reply(200, counts))
        session = LoadSession(f"http://127.0.0.1:{port}", seed=1, progress=None)
        report = await session.open_loop(0.0, 400.0, 0.5, poisson=False, connections=1,
                                         max_connections=8, job=session.current_get,
                                         check_after=False)
        nursery.cancel_scope.cancel()
    assert report.connections_opened == 8
    assert (report.total.ok, report.errors) == (200, 0), report.error_examples


# -- end to end -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardstatsServer]:
    tmp = tmp_path_factory.mktemp("loadgen-e2e")
    with ShardstatsServer(tmp / "data", tmp / "server.log") as server:
        yield server


@pytest.mark.e2e
def test_open_loop_against_a_real_server_reads_back_exactly(
    server: ShardstatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["open", server.url, "--post-rate", "150", "--get-rate", "40",
                     "--duration", "2", "--warmup", "0.3", "--baseline", "zero",
                     "--users", "2000", "--seed", "7", "--json", "--quiet"])
    captured = capsys.readouterr()
    context = f"{captured.out}\n{captured.err}\nserver log (tail):\n{server.tail()}"
    assert code == 0, context
    report = json.loads(captured.out)
    assert report["total"]["errors"] == 0, context
    assert report["total"]["ok"] > 100, context
    assert report["classes"]["POST"]["ok"] > 0, context
    assert report["classes"]["GET current"]["ok"] > 0, context
    assert report["check"]["ok"] and report["check"]["exact"], context
    assert report["check"]["acknowledged_events"] > 100, context
    assert report["check"]["unacknowledged_events"] == 0, context


@pytest.mark.e2e
def test_read_back_catches_an_event_the_run_did_not_send(server: ShardstatsServer) -> None:
    async def scenario() -> list[str]:
        session = LoadSession(server.url, WorkloadConfig(users=50), seed=8, progress=None)
        await session.read_baseline(session.window_hours(1.0))
        report = await session.closed_loop(4, 0.5, check_after=True)
        assert report.errors == 0 and report.passed, (report.as_dict(), server.tail())
        # Someone else's event lands in an hour the run wrote to: counted > sent.
        hour = max(session.ledger.hours)
        stranger = f"/analytics?timestamp={hour * HOUR_MS + 5}&user=stranger&event=click"
        async with httpx.AsyncClient() as client:
            assert (await client.post(server.url + stranger)).status_code == 204
        result = await session.read_back()
        return result.problems

    problems = trio.run(scenario)
    assert problems and all("INVENTED" in p for p in problems), problems
    assert any("clicks" in p for p in problems) and any("unique_users" in p for p in problems)

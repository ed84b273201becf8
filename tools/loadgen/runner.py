"""The I/O half of the load generator: open loop, closed loop, pre-population, read-back.

Everything that decides *what* to send lives in ``workload``; what the answers mean, in
``stats`` and ``ledger``. This module only sends requests over ``client.Connection``s on one
trio event loop and feeds the outcomes to those pure parts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import trio
from pyroaring import BitMap

from tools.loadgen.batch import (
    BATCH_PATH,
    BatchSource,
    Chunk,
    Verdict,
    Verdicts,
    fill_chunk,
    json_safe_prefix,
    parse_verdicts,
    plan_chunks,
    settle,
)
from tools.loadgen.client import Connection, Endpoint, Response, TransportError
from tools.loadgen.ledger import CheckResult, Counts, Ledger, check
from tools.loadgen.ranges import RangeAnswer, range_target
from tools.loadgen.stats import ClassSummary, Recorder, percentiles, summarize
from tools.loadgen.workload import (
    HOUR_MS,
    RANGE_CLASSES,
    FillPlan,
    HourTemperature,
    PlannedEvent,
    RequestClass,
    Workload,
    WorkloadConfig,
    arrivals,
)

Progress = Callable[[str], None]
PAST_CLASSES = (RequestClass.GET_PAST_COLD, RequestClass.GET_PAST_WARM)
Method = Literal["GET", "POST"]
T = TypeVar("T")


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_user_prefix() -> str:
    """A per-run prefix: this run's users are new to every hour (see ``ledger``)."""
    return f"lg{secrets.token_hex(4)}-"


def event_target(prefix: str, event: PlannedEvent) -> str:
    kind = "click" if event.click else "impression"
    return f"/analytics?timestamp={event.timestamp_ms}&user={prefix}{event.user}&event={kind}"


def query_target(timestamp_ms: int) -> str:
    return f"/analytics?timestamp={timestamp_ms}"


@dataclass(slots=True)
class Job:
    cls: RequestClass
    method: Method
    target: str
    t_sent: float  # trio clock: the scheduled time (open loop) or the send time (closed loop)
    event: PlannedEvent | None = None


@dataclass(frozen=True)
class Outcome:
    error: str | None
    detail: str | None
    response: Response | None


async def execute(conn: Connection, method: Method, target: str, limit: float,
                  body: bytes | None = None, expected: int | None = None) -> Outcome:
    """One request; any failure becomes an error kind (``HTTP 503``, ``timeout``...).

    Success is ``expected`` (by default 204 for a POST, 200 for a GET); an error status
    keeps its response (``Outcome.response``) so callers can tell 4xx from 5xx."""
    with trio.move_on_after(limit):
        try:
            response = await conn.request(method, target, body)
        except TransportError as exc:
            return Outcome("connection", str(exc), None)
        if expected is None:
            expected = 204 if method == "POST" else 200
        if response.status != expected:
            detail = response.headers.get(b"x-shardstats-error", response.body[:200])
            return Outcome(f"HTTP {response.status}", detail.decode("utf-8", "replace"),
                           response)
        return Outcome(None, None, response)
    return Outcome("timeout", f"no answer within {limit} s", None)


def decoded(response: Response, parse: Callable[[object], T]) -> T:
    """``parse`` of the JSON body; a ValueError that shows the body if it is unreadable."""
    try:
        return parse(json.loads(response.body))
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise ValueError(f"unreadable body {response.body[:120]!r}: {exc}") from None


def parse_counts(response: Response) -> Counts:
    return decoded(response, Counts.from_json)


def range_total(data: object) -> Counts:
    """The ``total`` of a range answer, checking only that much (the series is parsed and
    compared once per scenario by ``fetch_range``; parsing 720 steps per answer would make
    the load generator the bottleneck)."""
    if not isinstance(data, dict) or not isinstance(data.get("series"), list):
        raise ValueError("not a range answer")
    return Counts.from_json(data.get("total"))


async def each(conns: Sequence[Connection], work: Callable[[Connection], Awaitable[None]]
               ) -> None:
    """``work(conn)`` on every connection at once; each is closed when its work ends."""

    async def closing(conn: Connection) -> None:
        try:
            await work(conn)
        finally:
            conn.close()

    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(closing, conn)


async def preconnect(conns: Sequence[Connection]) -> None:
    """Open connections before the clock starts; a failure shows on first use instead."""

    async def one(conn: Connection) -> None:
        with contextlib.suppress(TransportError):
            await conn.connect()

    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(one, conn)


class Stopwatch:
    """Wall time (trio clock) and this process's CPU time since it was made."""

    def __init__(self) -> None:
        self.cpu0, self.t0 = time.process_time(), trio.current_time()

    @property
    def seconds(self) -> float:
        return trio.current_time() - self.t0

    @property
    def cpu_share(self) -> float:
        """CPU time over wall time: the load generator's share of one core."""
        return (time.process_time() - self.cpu0) / max(1e-9, self.seconds)


# -- reports -------------------------------------------------------------------------------


@dataclass
class LoadReport:
    mode: str
    url: str
    description: str
    warmup_s: float
    window_s: float
    classes: dict[RequestClass, ClassSummary]
    total: ClassSummary
    past: ClassSummary  # GET past cold and warm together
    client_cpu: float
    connections_opened: int
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    baseline_reads: ClassSummary | None = None
    error_examples: list[str] = field(default_factory=list)
    check: CheckResult | None = None

    @property
    def errors(self) -> int:
        return self.total.errors

    @property
    def passed(self) -> bool:
        return self.check is None or self.check.ok

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "url": self.url,
            "description": self.description,
            "warmup_s": self.warmup_s,
            "window_s": round(self.window_s, 3),
            "classes": {c.value: s.as_dict() for c, s in self.classes.items()},
            "total": self.total.as_dict(),
            "get_past_all": self.past.as_dict(),
            "client_cpu_fraction": round(self.client_cpu, 3),
            "connections_opened": self.connections_opened,
            "dispatch_lag_p99_ms": self.lag_p99_ms,
            "dispatch_lag_max_ms": self.lag_max_ms,
            "baseline_reads": self.baseline_reads.as_dict() if self.baseline_reads else None,
            "error_examples": self.error_examples,
            "check": self.check.as_dict() if self.check else None,
        }


@dataclass
class BatchTally:
    """Running totals of batch requests and their events (one per fill or batch run)."""

    sent: int = 0  # events, first sends only
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    unacknowledged: int = 0
    resent: int = 0  # events sent again after a 'failed' verdict
    retried_503: int = 0
    split: int = 0  # requests split in two after a 413
    errors: dict[str, int] = field(default_factory=dict)
    window_start: float = -math.inf
    window_end: float = math.inf
    accepted_in_window: int = 0

    def error(self, kind: str, events: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + events

    def as_dict(self) -> dict[str, object]:
        return {"events_sent": self.sent, "events_accepted": self.accepted,
                "events_rejected": self.rejected, "events_unacknowledged": self.unacknowledged,
                "events_resent": self.resent, "requests": self.requests,
                "retried_503": self.retried_503, "split_413": self.split,
                "batch_errors": self.errors}


@dataclass
class BatchReport:
    """A batch throughput run: request latencies in ``load``, event figures here."""

    load: LoadReport
    connections: int
    batch_events: int
    pool: int
    tally: BatchTally
    events_in_window: int  # events of batches sent in the window
    distinct_in_window: int  # distinct users in those batches
    new_in_window: int  # ... of which not sent before the window

    @property
    def event_rate(self) -> float:
        """Events acknowledged (durable) by answers that arrived in the window, per second."""
        return self.tally.accepted_in_window / self.load.window_s

    @property
    def check(self) -> CheckResult | None:
        return self.load.check

    @property
    def errors(self) -> int:
        return self.load.errors

    def as_dict(self) -> dict[str, object]:
        return {
            **self.load.as_dict(),
            **self.tally.as_dict(),
            "connections": self.connections,
            "batch_events": self.batch_events,
            "user_pool": self.pool,
            "events_per_s": round(self.event_rate, 1),
            "events_in_window": self.events_in_window,
            "distinct_users_in_window": self.distinct_in_window,
            "new_users_in_window": self.new_in_window,
        }


@dataclass
class FillReport:
    url: str
    hours: list[int]
    tally: BatchTally
    seconds: float
    client_cpu: float
    error_examples: list[str]
    check: CheckResult | None
    counts: dict[int, Counts]
    method: str = "single"  # "batch" or "single"
    connections: int = 0
    chunk_events: int = 1
    request_latency: ClassSummary | None = None

    @property
    def rate(self) -> float:
        return self.tally.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(self.tally.errors.values())

    def manifest(self) -> dict[str, object]:
        """Counts per hour after the fill: a baseline for a later run (``--baseline FILE``)."""
        return {"url": self.url,
                "hours": {str(h): c.as_dict() for h, c in sorted(self.counts.items())}}

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": "prepopulate",
            "url": self.url,
            "method": self.method,
            "connections": self.connections,
            "chunk_events": self.chunk_events,
            "hours": self.hours,
            **self.tally.as_dict(),
            "request_latency": (self.request_latency.as_dict() if self.request_latency
                                else None),
            "seconds": round(self.seconds, 3),
            "rate_per_s": round(self.rate, 1),
            "client_cpu_fraction": round(self.client_cpu, 3),
            "error_examples": self.error_examples,
            "check": self.check.as_dict() if self.check else None,
            "counts": self.manifest()["hours"],
        }


def load_manifest(path: str) -> dict[int, Counts]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    hours = data.get("hours") if isinstance(data, dict) else None
    if not isinstance(hours, dict):
        raise ValueError(f"{path}: not a manifest (no 'hours' object)")
    return {int(h): Counts.from_json(c) for h, c in hours.items()}


# -- the session ---------------------------------------------------------------------------


class Examples:
    """One example request per distinct failure (method, error, detail), for the report."""

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._seen: set[tuple[str, str, str]] = set()
        self.items: list[str] = []

    def add(self, method: str, target: str, error: str, detail: str | None) -> None:
        key = (method, error, detail or "")
        if len(self.items) < self.limit and key not in self._seen:
            self._seen.add(key)
            self.items.append(f"{method} {target}: {error}: {detail}")


class LoadSession:
    """One run against one server: workload, ledger of events, what is warm, the reports.

    ``baseline`` maps hours to the counts they held before this run (zero when absent);
    ``warm_hours`` are hours the server already has loaded (so their GETs are not cold).
    """

    def __init__(
        self,
        url: str,
        config: WorkloadConfig | None = None,
        *,
        seed: int | None = None,
        user_prefix: str | None = None,
        timeout: float = 10.0,
        baseline: Mapping[int, Counts] | None = None,
        warm_hours: Iterable[int] = (),
        progress: Progress | None = stderr_progress,
        progress_interval: float = 1.0,
    ) -> None:
        self.url = url
        self.endpoint = Endpoint.parse(url)
        self.config = config or WorkloadConfig()
        self.rng = random.Random(seed)
        self.workload = Workload(self.config, self.rng)
        self.prefix = user_prefix if user_prefix is not None else new_user_prefix()
        self.timeout = timeout
        self.baseline: dict[int, Counts] = dict(baseline or {})
        self.temperature = HourTemperature(warm_hours)
        self.ledger = Ledger()
        self.progress = progress
        self.progress_interval = progress_interval
        self.examples = Examples()
        self.connections_opened = 0
        self.baseline_reads: ClassSummary | None = None

    # -- jobs ------------------------------------------------------------------------------

    def post_job(self, t_sent: float) -> Job:
        event = self.workload.post(now_ms())
        self.temperature.touch(event.hour)
        return Job(RequestClass.POST, "POST", event_target(self.prefix, event), t_sent, event)

    def get_job(self, t_sent: float) -> Job:
        now = now_ms()
        query = self.workload.get(now)
        cls = self.temperature.classify_get(query.hour, now // HOUR_MS)
        return Job(cls, "GET", query_target(query.timestamp_ms), t_sent)

    async def run_job(self, conn: Connection, job: Job, recorder: Recorder) -> None:
        if job.event is not None:
            self.ledger.sent()
        outcome = await execute(conn, job.method, job.target, self.timeout)
        t_done = trio.current_time()
        if outcome.error is None and job.method == "GET" and outcome.response is not None:
            try:
                decoded(outcome.response,
                        range_total if job.cls in RANGE_CLASSES else Counts.from_json)
            except ValueError as exc:
                outcome = Outcome("bad body", str(exc), None)
        if outcome.error is not None:
            self.examples.add(job.method, job.target, outcome.error, outcome.detail)
        if job.event is not None:
            ev = job.event
            self.ledger.settle(ev.hour, ev.user, ev.click, acknowledged=outcome.error is None)
        recorder.record(job.cls, job.t_sent, t_done, outcome.error)

    def _connection(self) -> Connection:
        self.connections_opened += 1
        return Connection(self.endpoint)

    async def _connections(self, n: int) -> list[Connection]:
        conns = [self._connection() for _ in range(n)]
        await preconnect(conns)
        return conns

    # -- reading hours ---------------------------------------------------------------------

    async def read_hours(
        self, hours: Iterable[int], connections: int = 8, attempts: int = 5
    ) -> tuple[dict[int, Counts], list[float], list[str]]:
        """GET each hour once (503s retried); returns counts, latencies (s) and failures."""
        todo = sorted(set(hours))
        pending = iter(todo)
        counts: dict[int, Counts] = {}
        latencies: list[float] = []
        failures: list[str] = []

        async def reader(conn: Connection) -> None:
            for hour in pending:
                for attempt in range(attempts):
                    t0 = trio.current_time()
                    outcome = await execute(conn, "GET", query_target(hour * HOUR_MS),
                                            self.timeout)
                    if outcome.error is None and outcome.response is not None:
                        latencies.append(trio.current_time() - t0)
                        try:
                            counts[hour] = parse_counts(outcome.response)
                        except ValueError as exc:
                            failures.append(f"hour {hour}: {exc}")
                        break
                    if outcome.error != "HTTP 503" or attempt == attempts - 1:
                        failures.append(f"hour {hour}: {outcome.error}: {outcome.detail}")
                        break
                    await trio.sleep(0.2 * (attempt + 1))

        await each(await self._connections(max(1, min(connections, len(todo)))), reader)
        return counts, latencies, failures

    async def read_baseline(self, hours: Iterable[int]) -> None:
        """Read what the hours hold before the run; these first reads warm them up."""
        hours = list(hours)
        counts, latencies, failures = await self.read_hours(hours)
        if failures:
            raise RuntimeError("baseline read failed: " + "; ".join(failures[:5]))
        self.baseline.update(counts)
        for hour in hours:
            self.temperature.touch(hour)
        self.baseline_reads = summarize(latencies, Counter(), len(latencies), 1.0)

    def window_hours(self, seconds: float) -> list[int]:
        """Every hour the workload may touch in the next ``seconds``."""
        now = now_ms()
        first = now // HOUR_MS - self.config.past_hours - 1
        last = (now + int(seconds * 1000) + 60_000) // HOUR_MS
        return list(range(first, last + 1))

    async def read_back(self) -> CheckResult:
        """Read every hour of the ledger and check it (``CheckResult.hours`` holds what each
        readable hour counted)."""
        observed, _, failures = await self.read_hours(self.ledger.hours)
        result = check(self.ledger, observed, self.baseline)
        if failures:
            result = dataclasses.replace(result, unreadable=result.unreadable + tuple(failures))
        return result

    # -- progress and reports --------------------------------------------------------------

    @asynccontextmanager
    async def _progress(self, label: str, count: Callable[[], int], what: str,
                        more: Callable[[], str]) -> AsyncIterator[None]:
        """A progress line every ``progress_interval`` while the block runs: ``count()`` so
        far, its rate since the last line, then ``more()``."""

        async def report() -> None:
            assert self.progress is not None
            t0 = last_t = trio.current_time()
            last = 0
            while True:
                await trio.sleep(self.progress_interval)
                now, done = trio.current_time(), count()
                self.progress(f"[{label} {now - t0:6.1f}s] {done} {what}  "
                              f"{(done - last) / max(1e-9, now - last_t):8.0f}/s  {more()}")
                last, last_t = done, now

        async with trio.open_nursery() as nursery:
            if self.progress is not None:
                nursery.start_soon(report)
            yield
            nursery.cancel_scope.cancel()

    def _recorder_progress(self, label: str, recorder: Recorder, conns: Sequence[Connection]
                           ) -> AbstractAsyncContextManager[None]:
        return self._progress(label, lambda: recorder.done, "done", lambda: (
            f"errors {recorder.failed}  in flight {self.ledger.in_flight}  "
            f"connections {len(conns)}"))

    async def _load_report(self, mode: str, description: str, warmup: float,
                           recorder: Recorder, watch: Stopwatch, conns: Sequence[Connection],
                           check_after: bool, lags: Sequence[float] = ()) -> LoadReport:
        report = LoadReport(
            mode=mode, url=self.url, description=description, warmup_s=warmup,
            window_s=recorder.window, classes=recorder.summary(), total=recorder.total(),
            past=recorder.merged(PAST_CLASSES), client_cpu=watch.cpu_share,
            connections_opened=len(conns), baseline_reads=self.baseline_reads,
            error_examples=self.examples.items,
            lag_p99_ms=percentiles(lags)[2] * 1000 if lags else None,
            lag_max_ms=max(lags) * 1000 if lags else None)
        if check_after:
            report.check = await self.read_back()
        return report

    # -- open loop -------------------------------------------------------------------------

    async def open_loop(
        self,
        post_rate: float,
        get_rate: float,
        duration: float,
        *,
        warmup: float = 0.0,
        poisson: bool = True,
        connections: int = 8,
        max_connections: int = 256,
        check_after: bool = True,
        job: Callable[[float, bool], Job] | None = None,
        label: str = "open",
    ) -> LoadReport:
        """Send at fixed average rates; latency counts from each request's scheduled time.

        ``job(t, is_get)`` replaces the workload's requests when given.
        """
        if connections < 1 or max_connections < connections:
            raise ValueError("need 1 <= connections <= max_connections")
        schedule = arrivals(self.rng, post_rate, get_rate, warmup + duration, poisson=poisson)
        send, receive = trio.open_memory_channel[Job](math.inf)
        lags: list[float] = []
        conns = await self._connections(connections)
        watch = Stopwatch()
        t0 = watch.t0 + 0.01
        recorder = Recorder(t0 + warmup, t0 + warmup + duration)

        async def worker(conn: Connection) -> None:
            async for job in receive:
                await self.run_job(conn, job, recorder)

        async with self._recorder_progress(label, recorder, conns), \
                trio.open_nursery() as nursery:
            # A copy: the dispatcher below may add connections (each with its own worker)
            # before this task first runs.
            nursery.start_soon(each, conns[:], worker)
            async with send:
                for offset, is_get in schedule:
                    t_sched = t0 + offset
                    # Only sleep when early: a dispatcher that is late sends every job
                    # that is due without yielding, rather than one per trio scheduling
                    # round (a round can take many ms when hundreds of responses land
                    # at once, e.g. after a group commit).
                    now = trio.current_time()
                    if t_sched > now:
                        await trio.sleep_until(t_sched)
                        now = trio.current_time()
                    lags.append(now - t_sched)
                    if job is not None:
                        send.send_nowait(job(t_sched, is_get))
                    else:
                        send.send_nowait((self.get_job if is_get else self.post_job)(t_sched))
                    backlog = receive.statistics().current_buffer_used
                    if backlog and len(conns) < max_connections:
                        conns.append(self._connection())
                        nursery.start_soon(each, conns[-1:], worker)
                # Closing the channel lets each worker finish what is queued, then return.
        description = (
            f"open loop, {'Poisson' if poisson else 'uniform'} arrivals: {post_rate:g} POST/s + "
            f"{get_rate:g} GET/s for {duration:g} s (+{warmup:g} s warm-up), "
            f"{connections}..{max_connections} connections"
        )
        return await self._load_report("open", description, warmup, recorder, watch, conns,
                                       check_after, lags)

    # -- closed loop -----------------------------------------------------------------------

    async def closed_loop(
        self,
        connections: int,
        duration: float,
        *,
        warmup: float = 0.0,
        get_share: float = 0.0,
        job: Callable[[float], Job] | None = None,
        check_after: bool = True,
        label: str = "closed",
    ) -> LoadReport:
        """``connections`` clients, each sending its next request as soon as one answers."""
        if connections < 1:
            raise ValueError("connections must be at least 1")
        if not 0.0 <= get_share <= 1.0:
            raise ValueError("get_share must lie in [0, 1]")

        def next_job(t: float) -> Job:
            return (self.get_job if self.rng.random() < get_share else self.post_job)(t)

        make = job or next_job
        conns = await self._connections(connections)
        watch = Stopwatch()
        end = watch.t0 + warmup + duration
        recorder = Recorder(watch.t0 + warmup, end)

        async def worker(conn: Connection) -> None:
            while trio.current_time() < end:
                await self.run_job(conn, make(trio.current_time()), recorder)

        async with self._recorder_progress(label, recorder, conns):
            await each(conns, worker)
        what = "custom requests" if job else f"{get_share:.0%} GET"
        return await self._load_report(
            "closed", f"closed loop: {connections} connections, {what}, {duration:g} s "
            f"(+{warmup:g} s warm-up)", warmup, recorder, watch, conns, check_after)

    def fixed_get(self, hour: int, cls: RequestClass) -> Callable[[float], Job]:
        """A job source for ``closed_loop``: GETs of one hour, filed under ``cls``."""
        return self.fixed_job("GET", query_target(hour * HOUR_MS + HOUR_MS // 2), cls)

    def fixed_job(self, method: Method, target: str, cls: RequestClass
                  ) -> Callable[[float], Job]:
        """A job source for ``closed_loop``: one request, again and again, filed under ``cls``."""

        def make(t: float) -> Job:
            return Job(cls, method, target, t)

        return make

    def current_get(self, t: float, is_get: bool = True) -> Job:
        """A GET of the current hour (at the current instant), filed under ``GET current``;
        usable as ``open_loop``'s ``job``."""
        return Job(RequestClass.GET_CURRENT, "GET", query_target(now_ms()), t)

    # -- range queries ---------------------------------------------------------------------

    async def one_request(self, method: Method, target: str, body: bytes | None = None,
                      expected: int | None = None) -> Outcome:
        """One request on a connection of its own."""
        conn = self._connection()
        try:
            return await execute(conn, method, target, self.timeout, body, expected)
        finally:
            conn.close()

    async def fetch_range(self, first_hour: int, last_hour: int, step: str) -> RangeAnswer:
        """One range query; raises RuntimeError if it fails or its answer is unreadable."""
        target = range_target(first_hour, last_hour, step)
        outcome = await self.one_request("GET", target)
        if outcome.error is not None or outcome.response is None:
            raise RuntimeError(f"GET {target}: {outcome.error}: {outcome.detail}")
        try:
            return decoded(outcome.response, RangeAnswer.from_json)
        except ValueError as exc:
            raise RuntimeError(f"GET {target}: {exc}") from None

    async def range_loop(
        self,
        first_hour: int,
        last_hour: int,
        step: str,
        duration: float,
        *,
        connections: int = 1,
        warmup: float = 0.5,
        get_rate: float = 0.0,
        label: str = "range",
    ) -> tuple[LoadReport, LoadReport | None]:
        """Range queries over ``first_hour .. last_hour`` back to back (closed loop over
        ``connections``); with ``get_rate``, GETs of the current hour at that rate (open loop,
        Poisson) during the same time, to show whether the unions hold up other requests."""
        cls = RequestClass.RANGE_HOUR if step == "hour" else RequestClass.RANGE_DAY
        job = self.fixed_job("GET", range_target(first_hour, last_hour, step), cls)
        ranges: list[LoadReport] = []
        gets: list[LoadReport] = []

        async def run_ranges() -> None:
            ranges.append(await self.closed_loop(connections, duration, warmup=warmup, job=job,
                                                 check_after=False, label=label))

        async def run_gets() -> None:
            gets.append(await self.open_loop(0.0, get_rate, duration, warmup=warmup,
                                             connections=2, job=self.current_get,
                                             check_after=False, label=f"{label} + GET"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ranges)
            if get_rate > 0:
                nursery.start_soon(run_gets)
        return ranges[0], (gets[0] if gets else None)

    # -- batch ingest ----------------------------------------------------------------------

    async def batch_supported(self) -> bool:
        """Probe ``POST /analytics/batch`` with an empty body: 200 yes, 404 no, else raise."""
        outcome = await self.one_request("POST", BATCH_PATH, body=b"", expected=200)
        if outcome.error is None:
            return True
        if outcome.error == "HTTP 404":
            return False
        raise RuntimeError(f"POST {BATCH_PATH} (empty body) answered {outcome.error}: "
                           f"{outcome.detail}")

    async def send_batch(self, conn: Connection, chunk: Chunk, tally: BatchTally,
                         recorder: Recorder | None = None, retries: int = 20) -> None:
        """Send one chunk (whose events the ledger was told were ``sent``) until every line
        has an outcome, and file each in the ledger.

        - 503 for the whole request (nothing was taken): retried after a pause, up to
          ``retries`` times;
        - 413: split in halves, each sent on its own;
        - other 4xx: refused, nothing stored; 5xx, timeout, broken connection or an
          unreadable answer: every line unacknowledged (it may have been stored);
        - 200: per line, from ``results``; lines that ``failed`` are unacknowledged and are
          sent again (as a new, smaller batch) up to 3 times.

        ``recorder`` gets one latency sample per request, under ``POST batch``.
        """
        todo: list[tuple[Chunk, int]] = [(chunk, 0)]
        while todo:
            part, resent = todo.pop()
            for attempt in range(retries + 1):
                t_sent = trio.current_time()
                outcome = await execute(conn, "POST", BATCH_PATH, self.timeout, body=part.body,
                                        expected=200)
                t_done = trio.current_time()
                tally.requests += 1
                if outcome.error != "HTTP 503" or attempt == retries:
                    break
                tally.retried_503 += 1
                if recorder is not None:
                    recorder.record(RequestClass.BATCH, t_sent, t_done, outcome.error)
                await trio.sleep(min(1.0, 0.02 * 2**attempt))
            verdicts: Verdicts | None = None
            if outcome.error is None and outcome.response is not None:
                try:
                    verdicts = parse_verdicts(outcome.response.body, len(part))
                except ValueError as exc:
                    outcome = Outcome("bad body", str(exc), None)
            error = outcome.error
            if error == "HTTP 413":
                # The server may not have read the body, and then cannot take another request
                # on this connection (hypercorn answers 413 without "Connection: close" and
                # closes the connection when the next request arrives): start afresh.
                conn.close()
                if len(part) > 1:
                    tally.split += 1
                    todo += [(half, resent) for half in part.split()]
                    continue
            if recorder is not None:
                recorder.record(RequestClass.BATCH, t_sent, t_done, error)
            if error is not None:
                tally.error(error)
                self.examples.add("POST", BATCH_PATH, error, outcome.detail)
                status = outcome.response.status if outcome.response is not None else 0
                if 400 <= status < 500:  # refused as a whole: nothing was stored
                    self.ledger.refused(len(part))
                    tally.rejected += len(part)
                    continue
            settled = settle(self.ledger, part, verdicts)
            tally.accepted += settled.accepted
            tally.rejected += settled.rejected
            tally.unacknowledged += settled.unacknowledged
            if tally.window_start <= t_done <= tally.window_end:
                tally.accepted_in_window += settled.accepted
            if verdicts is not None:
                for kind, reason in verdicts.reasons.items():
                    self.examples.add("POST", BATCH_PATH, f"line {kind}", reason)
                    tally.error(f"lines {kind}", getattr(verdicts, kind))
                if verdicts.failed and resent < 3:
                    failed = [i for i, v in enumerate(verdicts.lines) if v is Verdict.FAILED]
                    again = part.subset(failed)
                    self.ledger.sent(len(again))
                    tally.resent += len(again)
                    await trio.sleep(0.05 * 2**resent)
                    todo.append((again, resent + 1))

    async def batch_loop(
        self,
        connections: int,
        duration: float,
        *,
        warmup: float = 0.0,
        batch_events: int = 10_000,
        pool: int = 1_000_000,
        zipf_s: float = 1.1,
        check_after: bool = True,
        label: str = "batch",
    ) -> BatchReport:
        """Closed loop of ``POST /analytics/batch``: ``connections`` clients, each sending its
        next batch of ``batch_events`` live events as soon as the last one is answered.

        The event rate counts events acknowledged (durable) by responses that arrived in the
        measured window; request latencies are those of batches sent in it. Users come from
        a Zipf-like law over ``pool`` users; those not sent before the window are *new* to
        the server (its user dictionary must add them), if it was empty when the run began.
        """
        if connections < 1 or batch_events < 1:
            raise ValueError("connections and batch_events must be at least 1")
        cfg = self.config
        source = BatchSource(self.rng, pool, zipf_s=zipf_s, click_share=cfg.click_share,
                             late_share=cfg.late_share, late_mean_ms=cfg.late_mean_ms,
                             late_max_ms=cfg.late_max_ms, jitter_ms=cfg.jitter_ms)
        prefix = json_safe_prefix(self.prefix)
        conns = await self._connections(connections)
        watch = Stopwatch()
        start, end = watch.t0 + warmup, watch.t0 + warmup + duration
        recorder = Recorder(start, end)
        tally = BatchTally(window_start=start, window_end=end)
        before, during = BitMap(), BitMap()
        events_in_window = 0

        async def worker(conn: Connection) -> None:
            nonlocal events_in_window
            while trio.current_time() < end:
                chunk = source.chunk(now_ms(), batch_events, prefix)
                self.ledger.sent(len(chunk))
                tally.sent += len(chunk)
                measured = trio.current_time() >= start
                (during if measured else before).update(chunk.users)
                events_in_window += len(chunk) if measured else 0
                await self.send_batch(conn, chunk, tally, recorder if measured else None)

        async with self._progress(label, lambda: tally.accepted, "events acknowledged",
                                  lambda: f"requests {tally.requests}  "
                                          f"errors {sum(tally.errors.values())}"):
            await each(conns, worker)
        load = await self._load_report(
            "batch", f"closed loop of POST {BATCH_PATH}: {connections} connections, "
            f"{batch_events:,} events per request, users from a pool of {pool:,}, "
            f"{duration:g} s (+{warmup:g} s warm-up)", warmup, recorder, watch, conns,
            check_after)
        return BatchReport(load, connections, batch_events, pool, tally, events_in_window,
                           len(during), len(during - before))

    # -- pre-population --------------------------------------------------------------------

    async def prepopulate(
        self,
        plans: Sequence[FillPlan],
        *,
        connections: int = 4,
        chunk_events: int = 25_000,
        max_hours_per_chunk: int = 8,
        single_connections: int = 64,
        use_batch: bool = True,
        check_after: bool = True,
        retries_503: int = 20,
        label: str = "fill",
    ) -> FillReport:
        """Send every planned event, oldest plan first, and read the hours back.

        Through ``POST /analytics/batch`` in chunks of ``chunk_events`` over ``connections``
        connections (``send_batch`` says how each answer is filed); if the server answers 404
        there (or ``use_batch`` is off), with single POSTs over ``single_connections``.
        """
        batch = use_batch and await self.batch_supported()
        if use_batch and not batch and self.progress is not None:
            self.progress(f"[{label}] POST {BATCH_PATH} answered 404: single POSTs instead")
        tally = BatchTally()
        total = sum(p.events for p in plans)
        watch = Stopwatch()
        recorder = Recorder(watch.t0, watch.t0 + 1e9)
        async with self._progress(label, lambda: tally.sent, f"/ {total} events",
                                  lambda: f"errors {sum(tally.errors.values())}"):
            if batch:
                await self._fill_batch(plans, connections, chunk_events, max_hours_per_chunk,
                                       tally, recorder, retries_503)
            else:
                await self._fill_single(plans, single_connections, tally, retries_503)
        seconds, cpu = watch.seconds, watch.cpu_share
        result = await self.read_back() if check_after else None
        return FillReport(
            url=self.url, hours=[p.hour for p in plans], tally=tally, seconds=seconds,
            client_cpu=cpu, error_examples=self.examples.items, check=result,
            counts={h.hour: h.observed for h in result.hours} if result else {},
            method="batch" if batch else "single",
            connections=connections if batch else single_connections,
            chunk_events=chunk_events if batch else 1,
            request_latency=recorder.summary()[RequestClass.BATCH] if batch else None,
        )

    async def _fill_batch(self, plans: Sequence[FillPlan], connections: int,
                          chunk_events: int, max_hours: int, tally: BatchTally,
                          recorder: Recorder, retries: int) -> None:
        chunks = plan_chunks(plans, chunk_events, max_hours)
        pending = iter(chunks)
        prefix = json_safe_prefix(self.prefix)

        async def filler(conn: Connection) -> None:
            for pieces in pending:
                chunk = fill_chunk(plans, pieces, prefix)
                self.ledger.sent(len(chunk))
                tally.sent += len(chunk)
                await self.send_batch(conn, chunk, tally, recorder, retries)

        await each(await self._connections(max(1, min(connections, len(chunks)))), filler)

    async def _fill_single(self, plans: Sequence[FillPlan], connections: int,
                           tally: BatchTally, retries_503: int) -> None:
        """One POST per event, the connections working through the plans in order (so
        mostly on one hour at a time: one open shard, group commits of up to
        ``connections`` events). A 503 (queue full) is retried after a short pause; any
        other failure leaves the event unacknowledged."""

        def planned() -> Iterator[PlannedEvent]:
            for plan in plans:
                stride = plan.stride
                yield from (plan.event(i, stride) for i in range(plan.events))

        events = planned()

        async def filler(conn: Connection) -> None:
            for event in events:
                target = event_target(self.prefix, event)
                self.ledger.sent()
                tally.sent += 1
                for attempt in range(retries_503 + 1):
                    outcome = await execute(conn, "POST", target, self.timeout)
                    tally.requests += 1
                    if outcome.error != "HTTP 503" or attempt == retries_503:
                        break
                    tally.retried_503 += 1
                    await trio.sleep(min(1.0, 0.02 * 2**attempt))
                if outcome.error is None:
                    tally.accepted += 1
                else:
                    tally.unacknowledged += 1
                    tally.error(outcome.error)
                    self.examples.add("POST", target, outcome.error, outcome.detail)
                self.ledger.settle(event.hour, event.user, event.click,
                                   acknowledged=outcome.error is None)

        await each(await self._connections(connections), filler)


def fill_plans(
    past_hours: int,
    events: int,
    users: int,
    *,
    click_share: float = 0.1,
    include_current: bool = False,
    first_age: int = 1,
    now: int | None = None,
    scatter: bool = False,
) -> list[FillPlan]:
    """Plans for ages ``first_age .. first_age+past_hours-1`` (oldest first), then maybe now."""
    now = now_ms() if now is None else now
    current = now // HOUR_MS
    plans = [
        FillPlan(current - age, events, users, click_share, scatter=scatter)
        for age in range(first_age + past_hours - 1, first_age - 1, -1)
    ]
    if include_current:
        span = max(1, now - current * HOUR_MS)
        plans.append(FillPlan(current, events, users, click_share, span_ms=span,
                              scatter=scatter))
    return plans

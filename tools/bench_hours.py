"""The bench's ``hours`` scenario (issue 14, target 1): single POSTs spread over many hours.

1. One fresh server; closed loops of single POSTs at the bench's connections, the shapes
   taking turns in paired rounds: the current hour only; the seed's traffic shape (95% current
   hour, 5% past hours weighted 1/h^1.5 over 48 h); evenly over 12 hours; evenly over 48 hours.
   Each shape's POST rate is shown as a ratio to the current-hour rate of the same round
   (median of the per-round ratios), and so is the server's CPU time per acknowledged POST
   (/proc/PID/stat): when the disk's fsync latency, not the CPU, limits the current hour's
   group commits (a busy shared disk), the rate ratios flatter the spread shapes, and the CPU
   ratio says what they would be on a CPU-bound server. Every shape's events are read back.
2. A flood: a fresh server, single POSTs evenly over all 720 hours of the 30-day window,
   closed loop, while the bench samples the server's RSS and open file descriptors from /proc
   every 0.2 s: their peaks show whether memory and descriptors stay bounded when every hour
   is written (the data dir's journals: one per hour).

Kept in its own module so that bench.py only calls ``run`` and ``summarize``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING

import trio

from tools.bench_cluster import process_cpu
from tools.loadgen.report import format_check, format_load, ms
from tools.loadgen.runner import LoadReport, LoadSession, stderr_progress
from tools.loadgen.workload import Workload, WorkloadConfig

if TYPE_CHECKING:
    from tools.bench import Bench

SHAPES: dict[str, tuple[str, WorkloadConfig]] = {
    "current": ("current hour only", WorkloadConfig(past_share=0.0)),
    "seed": ("95/5 seed shape (1/h^1.5 over 48 h)", WorkloadConfig()),
    "even12": ("evenly over 12 hours",
               WorkloadConfig(past_share=11 / 12, past_hours=11, past_exponent=0.0)),
    "even48": ("evenly over 48 hours",
               WorkloadConfig(past_share=47 / 48, past_hours=47, past_exponent=0.0)),
}
TARGETS = {"seed": 0.95, "even48": 0.8}
FLOOD_HOURS = 720


@dataclass
class Peaks:
    """Peak RSS (MiB) and open descriptors of a process, sampled in a thread."""

    pid: int
    rss_mib: float = 0.0
    fds: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.rss_mib = max(self.rss_mib, int(line.split()[1]) / 1024)
            self.samples += 1

    def run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def stop(self) -> None:
        self._stop.set()


def session(bench: Bench, url: str, config: WorkloadConfig) -> LoadSession:
    return LoadSession(url, config, seed=bench.seed, progress=stderr_progress, baseline={})


def run(bench: Bench) -> None:
    spread(bench)
    flood(bench)


def spread(bench: Bench) -> None:
    scale = bench.scale
    bench.section(f"Single POSTs spread over hours: closed loop, {scale.connections} "
                  f"connections, {scale.rounds} rounds of {scale.throughput_s:g} s "
                  f"(+{scale.warmup:g} s warm-up) per shape on one server, the shapes taking "
                  "turns: " + "; ".join(f"{k} = {label}" for k, (label, _) in SHAPES.items()))
    server = bench.shardstats(bench.work / "hours-data")
    with contextlib.ExitStack() as stack:
        stack.callback(server.kill)
        stack.callback(server.stop)
        server.start()
        # One session, so one ledger holds every shape's events (they share hours); only
        # its traffic model changes from shape to shape.
        sess = session(bench, server.url, WorkloadConfig())
        for round_no in range(1, scale.rounds + 1):
            for name, (_, config) in SHAPES.items():
                sess.config, sess.workload = config, Workload(config, sess.rng)
                cpu0, acked0 = process_cpu(server.pid), sess.ledger.acknowledged
                report = trio.run(functools.partial(
                    sess.closed_loop, scale.connections, scale.throughput_s,
                    warmup=scale.warmup, check_after=False,
                    label=f"POST {name} round {round_no}"))
                # Over the whole run, warm-up included: CPU for every POST acknowledged.
                acked = sess.ledger.acknowledged - acked0
                cpu_us = (process_cpu(server.pid) - cpu0) * 1e6 / max(1, acked)
                bench.rounds.setdefault(f"hours:{name}", []).append(report)
                bench.results.data.setdefault("hours_cpu_per_post_us", {}).setdefault(
                    name, []).append(cpu_us)
                t = report.total
                bench.say(f"round {round_no}  {name:<8}{t.rate:>9,.0f}/s  p50 {ms(t.p50_ms):>7} "
                          f"ms  p99 {ms(t.p99_ms):>7} ms  errors {t.errors}  server CPU "
                          f"{cpu_us:,.0f} us per POST")
        result = trio.run(sess.read_back)
        bench.say("every shape: " + "\n".join(format_check(result)))
        if not result.ok:
            bench.results.failures.append(
                "hours: read-back failed: " + "; ".join(result.problems[:5]))
        bench.results.data["hours_rss_mib"] = server.rss_mib()


def flood(bench: Bench) -> None:
    scale = bench.scale
    seconds = scale.throughput_s * 2
    config = WorkloadConfig(past_share=(FLOOD_HOURS - 1) / FLOOD_HOURS,
                            past_hours=FLOOD_HOURS - 1, past_exponent=0.0)
    bench.section(f"Flood of all {FLOOD_HOURS} hours of the window: single POSTs evenly over "
                  f"them, closed loop, {scale.connections} connections, {seconds:g} s, on a "
                  "fresh server with the default limits; peak RSS and open file descriptors "
                  "of the server sampled every 0.2 s")
    server = bench.shardstats(bench.work / "flood-data")
    with contextlib.ExitStack() as stack:
        stack.callback(server.kill)
        stack.callback(server.stop)
        server.start()
        peaks = Peaks(server.pid)
        peaks.sample()
        fresh_rss, fresh_fds = peaks.rss_mib, peaks.fds
        sampler = threading.Thread(target=peaks.run, daemon=True)
        sampler.start()
        stack.callback(peaks.stop)
        sess = session(bench, server.url, config)
        report = trio.run(lambda: sess.closed_loop(scale.connections, seconds, warmup=0.0,
                                                   check_after=True, label="POST flood"))
        peaks.stop()
        sampler.join()
        bench.say(format_load(report))  # with its read-back
        bench.checked("flood of every hour", report)
        hours = len(sess.ledger.hours)
        bench.say(f"hours written: {hours}; server at start: RSS {fresh_rss:.1f} MiB, "
                  f"{fresh_fds} fds; peaks during the flood and its read-back: RSS "
                  f"{peaks.rss_mib:.1f} MiB, {peaks.fds} fds ({peaks.samples} samples)")
        bench.reports["hours_flood"] = report
        bench.results.data.update(flood_hours=hours, flood_rss_fresh_mib=fresh_rss,
                                  flood_fds_fresh=fresh_fds, flood_rss_peak_mib=peaks.rss_mib,
                                  flood_fds_peak=peaks.fds)


def summarize(bench: Bench) -> None:
    from tools.bench import Row, fmt_rate

    res = bench.results
    for name, (label, _) in SHAPES.items():
        if name == "current":
            continue
        pair = bench.paired(f"hours:{name}", "hours:current", lambda rep: rep.total.rate)
        if pair is None:
            continue
        a, b, ratio = pair
        floor = TARGETS.get(name)
        res.add(Row(f"single POSTs {label} vs current hour only", fmt_rate(a), fmt_rate(b),
                    f"{ratio:.2f}", f">= {floor:g}" if floor else "",
                    None if floor is None else ratio >= floor))
        cpu = res.data.get("hours_cpu_per_post_us", {})
        if cpu.get(name) and cpu.get("current"):
            ratios = [x / y for x, y in zip(cpu[name], cpu["current"], strict=False) if y > 0]
            res.add(Row(f"  server CPU per POST, {label} vs current hour only",
                        f"{median(cpu[name]):,.0f} us", f"{median(cpu['current']):,.0f} us",
                        f"{median(ratios):.2f}" if ratios else "-"))
    flood_report: LoadReport | None = bench.reports.get("hours_flood")
    data = res.data
    if flood_report is not None and "flood_rss_peak_mib" in data:
        res.add(Row(f"flood of {data['flood_hours']} hours: POST rate, errors",
                    f"{fmt_rate(flood_report.total.rate)}, {flood_report.total.errors}"))
        res.add(Row(f"flood of {data['flood_hours']} hours: peak RSS / open fds",
                    f"{data['flood_rss_peak_mib']:.0f} MiB / {data['flood_fds_peak']}",
                    f"{data['flood_rss_fresh_mib']:.0f} MiB / {data['flood_fds_fresh']} "
                    "(fresh)"))
    if any(k.startswith("hours:") for k in bench.rounds):
        res.notes.append("'single POSTs ... vs current hour only' rows: medians of paired "
                         "rounds on one server (ratio = median of the per-round ratios)")


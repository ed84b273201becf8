"""Command line of the load generator.

    python -m tools.loadgen open URL --post-rate 100 --get-rate 20 --duration 30
    python -m tools.loadgen closed URL --connections 64 --duration 10 --get-share 0.1
    python -m tools.loadgen prepopulate URL --hours 48 --events 10000 --users 2000
    python -m tools.loadgen batch URL --connections 4 --batch-events 10000 --duration 10
    python -m tools.loadgen range URL --hours 720 --step day --duration 10 --get-rate 100

Progress goes to stderr once a second; the report goes to stdout (``--json`` for JSON).
Exit status: 0 done, 1 the read-back found lost or invented events (or, with
``--fail-on-errors``, any request failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import trio

from tools.loadgen.ledger import Counts
from tools.loadgen.report import format_batch, format_fill, format_load
from tools.loadgen.runner import (
    BatchReport,
    FillReport,
    LoadReport,
    LoadSession,
    fill_plans,
    load_manifest,
    now_ms,
    stderr_progress,
)
from tools.loadgen.workload import HOUR_MS, WorkloadConfig

EPILOG = """\
The read-back: after the load, every hour that received events is read with GET and compared
with what the server acknowledged: baseline + acknowledged <= counted <= baseline + sent, and
exactly equal when nothing failed. A mismatch is reported as LOST or INVENTED events and the
command exits 1. The baseline (what the hours held before) is, with --baseline:
  read   GET every hour the run may touch before starting (default; this warms those hours,
         so no 'GET past cold' samples are taken during the load: their first reads are
         summarised on their own line instead)
  zero   the hours are known to be empty (a fresh server): past-hour GETs stay cold until
         the run first touches their hour
  FILE   a manifest written by 'prepopulate --manifest FILE' (those hours are counted as
         warm only with --warm-manifest, i.e. when the server was not restarted since)
Users are named with a fresh per-run prefix so that unique users add up exactly.
Run against a server nobody else is writing to.
"""


def _workload_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("workload")
    g.add_argument("--users", type=int, default=100_000, help="user pool size (default 100000)")
    g.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of users (1.1)")
    g.add_argument("--past-share", type=float, default=0.05,
                   help="share of requests for past hours (0.05)")
    g.add_argument("--past-hours", type=int, default=48, help="how far back (48 hours)")
    g.add_argument("--past-exponent", type=float, default=1.5,
                   help="weight of age h is h**-exponent (1.5)")
    g.add_argument("--click-share", type=float, default=0.1, help="share of clicks (0.1)")
    g.add_argument("--late-share", type=float, default=0.05,
                   help="share of current-hour events sent late, out of order (0.05)")


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="per-request timeout in seconds (10)")
    parser.add_argument("--user-prefix", default=None,
                        help="prefix of user ids (default: a fresh random one per run)")
    parser.add_argument("--baseline", default="read", metavar="read|zero|FILE",
                        help="what the hours held before the run (see below)")
    parser.add_argument("--warm-manifest", action="store_true",
                        help="hours of the --baseline manifest are already loaded (warm)")
    parser.add_argument("--no-check", action="store_true", help="skip the read-back")
    parser.add_argument("--fail-on-errors", action="store_true",
                        help="exit 1 if any request failed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadgen",
        description="Load generator for the shardstats HTTP API (README: API, Benchmarks).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p_open = sub.add_parser("open", help="fixed arrival rates (open loop)", epilog=EPILOG,
                            formatter_class=fmt,
                            description="Open loop: requests are scheduled at fixed average "
                            "rates and latency is measured from each scheduled time, so a "
                            "server that falls behind shows its queueing delay.")
    _common_args(p_open)
    p_open.add_argument("--post-rate", type=float, default=100.0, help="POST/s (100)")
    p_open.add_argument("--get-rate", type=float, default=20.0, help="GET/s (20)")
    p_open.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p_open.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    p_open.add_argument("--uniform", action="store_true",
                        help="evenly spaced arrivals instead of Poisson")
    p_open.add_argument("--connections", type=int, default=8,
                        help="connections opened before the start (8)")
    p_open.add_argument("--max-connections", type=int, default=256,
                        help="more are opened when all are busy, up to this many (256)")
    _workload_args(p_open)

    p_closed = sub.add_parser("closed", help="max throughput over N connections (closed loop)",
                              epilog=EPILOG, formatter_class=fmt,
                              description="Closed loop: each connection sends its next "
                              "request as soon as the previous one is answered.")
    _common_args(p_closed)
    p_closed.add_argument("--connections", type=int, default=64, help="connections (64)")
    p_closed.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p_closed.add_argument("--warmup", type=float, default=1.0,
                          help="unmeasured seconds first (1)")
    p_closed.add_argument("--get-share", type=float, default=0.0,
                          help="share of GETs, the rest POSTs (0)")
    _workload_args(p_closed)

    p_fill = sub.add_parser("prepopulate", help="fill past hours with events, fast",
                            formatter_class=fmt,
                            description="Fill HOURS past hours (oldest first, ending one hour "
                            "ago) with EVENTS events each from USERS distinct users through "
                            "POST /analytics/batch (single POSTs over many keep-alive "
                            "connections if the server answers 404 there), then read every "
                            "hour back.")
    _common_args(p_fill)
    p_fill.add_argument("--hours", type=int, default=48, help="past hours to fill (48)")
    p_fill.add_argument("--events", type=int, default=10_000, help="events per hour (10000)")
    p_fill.add_argument("--users", type=int, default=1_000,
                        help="distinct users per hour (1000); with --scatter, the pool")
    p_fill.add_argument("--scatter", action="store_true",
                        help="draw each hour's users at random from a pool of USERS (hours "
                        "overlap partly) instead of the same USERS users every hour")
    p_fill.add_argument("--first-age", type=int, default=1,
                        help="the newest filled hour is this many hours ago (1)")
    p_fill.add_argument("--include-current", action="store_true",
                        help="fill the current hour too (timestamps up to now)")
    p_fill.add_argument("--click-share", type=float, default=0.1, help="share of clicks (0.1)")
    p_fill.add_argument("--connections", type=int, default=4,
                        help="connections for batch requests (4)")
    p_fill.add_argument("--chunk-events", type=int, default=25_000,
                        help="events per batch request (25000)")
    p_fill.add_argument("--single", action="store_true",
                        help="single POSTs even if the server has the batch endpoint")
    p_fill.add_argument("--single-connections", type=int, default=64,
                        help="connections for single POSTs (64)")

    p_batch = sub.add_parser("batch", help="batch ingest throughput (closed loop)",
                             epilog=EPILOG, formatter_class=fmt,
                             description="Closed loop of POST /analytics/batch: each "
                             "connection sends its next batch of live events (current hour, "
                             "users from a Zipf-like pool) as soon as the last one is "
                             "answered. Reports durable events/s and per-request latency.")
    _common_args(p_batch)
    p_batch.add_argument("--connections", type=int, default=4, help="connections (4)")
    p_batch.add_argument("--batch-events", type=int, default=10_000,
                         help="events per request (10000)")
    p_batch.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p_batch.add_argument("--warmup", type=float, default=1.0,
                         help="unmeasured seconds first (1)")
    p_batch.add_argument("--users", type=int, default=1_000_000,
                         help="user pool size (1000000)")
    p_batch.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of users (1.1)")

    p_range = sub.add_parser("range", help="range query latency (closed loop)",
                             formatter_class=fmt,
                             description="GET /analytics/range over the HOURS hours ending "
                             "with the current one, back to back over CONNECTIONS; with "
                             "--get-rate, GETs of the current hour at that rate meanwhile "
                             "(their latency shows whether unions hold up other requests). "
                             "No read-back: it only reads.")
    p_range.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    p_range.add_argument("--hours", type=int, default=720, help="hours in the range (720)")
    p_range.add_argument("--end-age", type=int, default=0,
                         help="the range ends this many hours ago (0: the current hour)")
    p_range.add_argument("--step", choices=("hour", "day"), default="hour",
                         help="series step (hour)")
    p_range.add_argument("--connections", type=int, default=1, help="connections (1)")
    p_range.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p_range.add_argument("--warmup", type=float, default=0.5,
                         help="unmeasured seconds first (0.5)")
    p_range.add_argument("--get-rate", type=float, default=0.0,
                         help="GETs of the current hour per second meanwhile (0: none)")
    p_range.add_argument("--timeout", type=float, default=10.0,
                         help="per-request timeout in seconds (10)")
    p_range.add_argument("--fail-on-errors", action="store_true",
                         help="exit 1 if any request failed")
    p_range.add_argument("--json", action="store_true", help="print the report as JSON")
    p_range.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p_fill.add_argument("--manifest", metavar="FILE",
                        help="write the hours' counts as JSON (a --baseline for later runs)")
    return parser


def _config(args: argparse.Namespace) -> WorkloadConfig:
    return WorkloadConfig(
        users=args.users,
        zipf_s=args.zipf,
        past_share=args.past_share,
        past_hours=args.past_hours,
        past_exponent=args.past_exponent,
        click_share=args.click_share,
        late_share=args.late_share,
    )


def _baseline(args: argparse.Namespace) -> tuple[str, dict[int, Counts]]:
    if args.baseline in ("read", "zero"):
        return args.baseline, {}
    return "file", load_manifest(args.baseline)


Report = LoadReport | FillReport | BatchReport


async def _run(args: argparse.Namespace, mode: str, baseline: dict[int, Counts]) -> Report:
    progress = None if args.quiet else stderr_progress
    warm = list(baseline) if args.warm_manifest else []
    if args.command == "prepopulate":
        session = LoadSession(args.url, seed=args.seed, user_prefix=args.user_prefix,
                              timeout=args.timeout, baseline=baseline, progress=progress)
        plans = fill_plans(args.hours, args.events, args.users, click_share=args.click_share,
                           include_current=args.include_current, first_age=args.first_age,
                           scatter=args.scatter)
        if mode == "read":
            await session.read_baseline(p.hour for p in plans)
        return await session.prepopulate(plans, connections=args.connections,
                                         chunk_events=args.chunk_events,
                                         single_connections=args.single_connections,
                                         use_batch=not args.single,
                                         check_after=not args.no_check)
    if args.command == "batch":
        config = WorkloadConfig(users=args.users, zipf_s=args.zipf)
        session = LoadSession(args.url, config, seed=args.seed, user_prefix=args.user_prefix,
                              timeout=args.timeout, baseline=baseline, progress=progress)
        if mode == "read" and not args.no_check:
            await session.read_baseline(session.window_hours(args.warmup + args.duration)[-3:])
        return await session.batch_loop(args.connections, args.duration, warmup=args.warmup,
                                        batch_events=args.batch_events, pool=args.users,
                                        zipf_s=args.zipf, check_after=not args.no_check)
    session = LoadSession(args.url, _config(args), seed=args.seed, user_prefix=args.user_prefix,
                          timeout=args.timeout, baseline=baseline, warm_hours=warm,
                          progress=progress)
    if mode == "read" and not args.no_check:
        await session.read_baseline(session.window_hours(args.warmup + args.duration))
    if args.command == "open":
        return await session.open_loop(
            args.post_rate, args.get_rate, args.duration, warmup=args.warmup,
            poisson=not args.uniform, connections=args.connections,
            max_connections=max(args.connections, args.max_connections),
            check_after=not args.no_check,
        )
    return await session.closed_loop(
        args.connections, args.duration, warmup=args.warmup, get_share=args.get_share,
        check_after=not args.no_check,
    )


async def _run_range(args: argparse.Namespace) -> tuple[LoadReport, LoadReport | None]:
    progress = None if args.quiet else stderr_progress
    session = LoadSession(args.url, timeout=args.timeout, progress=progress)
    last = now_ms() // HOUR_MS - args.end_age
    return await session.range_loop(last - args.hours + 1, last, args.step, args.duration,
                                    connections=args.connections, warmup=args.warmup,
                                    get_rate=args.get_rate)


def range_main(args: argparse.Namespace) -> int:
    try:
        ranges, gets = trio.run(_run_range, args)
    except (ValueError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"range": ranges.as_dict(),
                          "get_current": gets.as_dict() if gets else None}, indent=1))
    else:
        print(format_load(ranges))
        if gets is not None:
            print(format_load(gets))
    errors = ranges.errors + (gets.errors if gets else 0)
    return 1 if errors and args.fail_on_errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "range":
        return range_main(args)
    try:
        mode, baseline = _baseline(args)
        report = trio.run(_run, args, mode, baseline)
    except (ValueError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    if isinstance(report, FillReport) and args.manifest:
        with open(args.manifest, "w", encoding="utf-8") as handle:
            json.dump(report.manifest(), handle, indent=1)
    out: dict[str, Any] = report.as_dict()
    if args.json:
        print(json.dumps(out, indent=1))
    elif isinstance(report, LoadReport):
        print(format_load(report))
    elif isinstance(report, BatchReport):
        print(format_batch(report))
    else:
        print(format_fill(report))
    if report.check is not None and not report.check.ok:
        if report.check.unreadable and all(h.ok for h in report.check.hours):
            print("\nloadgen: READ-BACK INCOMPLETE: some hours could not be read back, so "
                  "the counts were not verified (see above)", file=sys.stderr)
        else:
            print("\nloadgen: READ-BACK FAILED: the server lost or invented events "
                  "(see above)", file=sys.stderr)
        return 1
    errors = (sum(report.errors.values()) if isinstance(report, FillReport)
              else report.errors)
    if args.fail_on_errors and errors:
        print(f"loadgen: {errors} requests failed", file=sys.stderr)
        return 1
    return 0

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

# Workload options: (flag, WorkloadConfig field, help).
WORKLOAD = (
    ("--users", "users", "user pool size"),
    ("--zipf", "zipf_s", "Zipf exponent of users"),
    ("--past-share", "past_share", "share of requests for past hours"),
    ("--past-hours", "past_hours", "how far back, in hours"),
    ("--past-exponent", "past_exponent", "weight of age h is h**-exponent"),
    ("--click-share", "click_share", "share of clicks"),
    ("--late-share", "late_share", "share of current-hour events sent late, out of order"),
)


def _add(parser: argparse._ActionsContainer, flag: str, default: float, text: str,
         **kwargs: Any) -> None:
    """A numeric option whose help ends with its default."""
    parser.add_argument(flag, type=type(default), default=default, help=f"{text} ({default})",
                        **kwargs)


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    _add(parser, "--timeout", 10.0, "per-request timeout in seconds")
    parser.add_argument("--fail-on-errors", action="store_true",
                        help="exit 1 if any request failed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _ledger_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--user-prefix", default=None,
                        help="prefix of user ids (default: a fresh random one per run)")
    parser.add_argument("--baseline", default="read", metavar="read|zero|FILE",
                        help="what the hours held before the run (see below)")
    parser.add_argument("--warm-manifest", action="store_true",
                        help="hours of the --baseline manifest are already loaded (warm)")
    parser.add_argument("--no-check", action="store_true", help="skip the read-back")


def _loop_args(parser: argparse.ArgumentParser, connections: int, warmup: float) -> None:
    _add(parser, "--connections", connections, "connections")
    _add(parser, "--duration", 10.0, "measured seconds")
    _add(parser, "--warmup", warmup, "unmeasured seconds first")


def _workload_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    defaults = WorkloadConfig()
    for flag, name, text in WORKLOAD:
        _add(group, flag, getattr(defaults, name), text, dest=name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadgen",
        description="Load generator for the shardstats HTTP API (README: API, Benchmarks).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, ledger: bool = True
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description,
                           epilog=EPILOG if ledger else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _output_args(p)
        if ledger:
            _ledger_args(p)
        return p

    p = command("open", "fixed arrival rates (open loop)",
                "Open loop: requests are scheduled at fixed average rates and latency is "
                "measured from each scheduled time, so a server that falls behind shows its "
                "queueing delay.")
    _add(p, "--post-rate", 100.0, "POST/s")
    _add(p, "--get-rate", 20.0, "GET/s")
    _loop_args(p, 8, 1.0)
    p.add_argument("--uniform", action="store_true",
                   help="evenly spaced arrivals instead of Poisson")
    _add(p, "--max-connections", 256, "more are opened when all are busy, up to this many")
    _workload_args(p)

    p = command("closed", "max throughput over N connections (closed loop)",
                "Closed loop: each connection sends its next request as soon as the previous "
                "one is answered.")
    _loop_args(p, 64, 1.0)
    _add(p, "--get-share", 0.0, "share of GETs, the rest POSTs")
    _workload_args(p)

    p = command("prepopulate", "fill past hours with events, fast",
                "Fill HOURS past hours (oldest first, ending one hour ago) with EVENTS events "
                "each from USERS distinct users through POST /analytics/batch (single POSTs "
                "over many keep-alive connections if the server answers 404 there), then "
                "read every hour back.")
    _add(p, "--hours", 48, "past hours to fill")
    _add(p, "--events", 10_000, "events per hour")
    _add(p, "--users", 1_000, "distinct users per hour; with --scatter, the pool")
    p.add_argument("--scatter", action="store_true",
                   help="draw each hour's users at random from a pool of USERS (hours "
                   "overlap partly) instead of the same USERS users every hour")
    _add(p, "--first-age", 1, "the newest filled hour is this many hours ago")
    p.add_argument("--include-current", action="store_true",
                   help="fill the current hour too (timestamps up to now)")
    _add(p, "--click-share", 0.1, "share of clicks")
    _add(p, "--connections", 4, "connections for batch requests")
    _add(p, "--chunk-events", 25_000, "events per batch request")
    p.add_argument("--single", action="store_true",
                   help="single POSTs even if the server has the batch endpoint")
    _add(p, "--single-connections", 64, "connections for single POSTs")
    p.add_argument("--manifest", metavar="FILE",
                   help="write the hours' counts as JSON (a --baseline for later runs)")

    p = command("batch", "batch ingest throughput (closed loop)",
                "Closed loop of POST /analytics/batch: each connection sends its next batch "
                "of live events (current hour, users from a Zipf-like pool) as soon as the "
                "last one is answered. Reports durable events/s and per-request latency.")
    _loop_args(p, 4, 1.0)
    _add(p, "--batch-events", 10_000, "events per request")
    _add(p, "--users", 1_000_000, "user pool size")
    _add(p, "--zipf", 1.1, "Zipf exponent of users", dest="zipf_s")

    p = command("range", "range query latency (closed loop)",
                "GET /analytics/range over the HOURS hours ending with the current one, back "
                "to back over CONNECTIONS; with --get-rate, GETs of the current hour at that "
                "rate meanwhile (their latency shows whether unions hold up other requests). "
                "No read-back: it only reads.", ledger=False)
    _add(p, "--hours", 720, "hours in the range")
    _add(p, "--end-age", 0, "the range ends this many hours ago (0: the current hour)")
    p.add_argument("--step", choices=("hour", "day"), default="hour",
                   help="series step (hour)")
    _loop_args(p, 1, 0.5)
    _add(p, "--get-rate", 0.0, "GETs of the current hour per second meanwhile (0: none)")
    return parser


Report = LoadReport | FillReport | BatchReport


async def _run(args: argparse.Namespace, baseline: dict[int, Counts]) -> Report:
    session = LoadSession(
        args.url, WorkloadConfig(**{name: getattr(args, name) for _, name, _ in WORKLOAD
                                    if hasattr(args, name)}),
        seed=args.seed, user_prefix=args.user_prefix, timeout=args.timeout, baseline=baseline,
        warm_hours=list(baseline) if args.warm_manifest else [],
        progress=None if args.quiet else stderr_progress)
    read = args.baseline == "read" and not args.no_check
    if args.command == "prepopulate":
        plans = fill_plans(args.hours, args.events, args.users, click_share=args.click_share,
                           include_current=args.include_current, first_age=args.first_age,
                           scatter=args.scatter)
        if args.baseline == "read":
            await session.read_baseline(p.hour for p in plans)
        return await session.prepopulate(plans, connections=args.connections,
                                         chunk_events=args.chunk_events,
                                         single_connections=args.single_connections,
                                         use_batch=not args.single,
                                         check_after=not args.no_check)
    hours = session.window_hours(args.warmup + args.duration)
    if args.command == "batch":
        if read:
            await session.read_baseline(hours[-3:])
        return await session.batch_loop(args.connections, args.duration, warmup=args.warmup,
                                        batch_events=args.batch_events, pool=args.users,
                                        zipf_s=args.zipf_s, check_after=not args.no_check)
    if read:
        await session.read_baseline(hours)
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
    session = LoadSession(args.url, timeout=args.timeout,
                          progress=None if args.quiet else stderr_progress)
    last = now_ms() // HOUR_MS - args.end_age
    return await session.range_loop(last - args.hours + 1, last, args.step, args.duration,
                                    connections=args.connections, warmup=args.warmup,
                                    get_rate=args.get_rate)


def _print_range(ranges: LoadReport, gets: LoadReport | None, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"range": ranges.as_dict(),
                          "get_current": gets.as_dict() if gets else None}, indent=1))
    else:
        print("\n".join(format_load(r) for r in (ranges, gets) if r is not None))
    return ranges.errors + (gets.errors if gets else 0)


def _print(report: Report, args: argparse.Namespace) -> int:
    if isinstance(report, FillReport) and args.manifest:
        with open(args.manifest, "w", encoding="utf-8") as handle:
            json.dump(report.manifest(), handle, indent=1)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    elif isinstance(report, LoadReport):
        print(format_load(report))
    elif isinstance(report, BatchReport):
        print(format_batch(report))
    else:
        print(format_fill(report))
    return report.errors


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "range":
            errors = _print_range(*trio.run(_run_range, args), args.json)
            return 1 if errors and args.fail_on_errors else 0
        baseline = ({} if args.baseline in ("read", "zero")
                    else load_manifest(args.baseline))
        report = trio.run(_run, args, baseline)
    except (ValueError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    errors = _print(report, args)
    if report.check is not None and not report.check.ok:
        if report.check.unreadable and all(h.ok for h in report.check.hours):
            print("\nloadgen: READ-BACK INCOMPLETE: some hours could not be read back, so "
                  "the counts were not verified (see above)", file=sys.stderr)
        else:
            print("\nloadgen: READ-BACK FAILED: the server lost or invented events "
                  "(see above)", file=sys.stderr)
        return 1
    if args.fail_on_errors and errors:
        print(f"loadgen: {errors} requests failed", file=sys.stderr)
        return 1
    return 0

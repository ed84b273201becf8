"""Command line: ``shardstats serve | verify | compact | export | prune``.

Thin: each command parses flags, calls ``shardstats.ops`` or ``shardstats.server``, prints.

Exit codes: 0 success; 1 a check failed or the work failed; 2 usage or configuration error
(bad flag, missing data directory); 3 the data directory is locked by a running server (for
commands that need it to themselves).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from shardstats import __version__
from shardstats.config import ConfigError, load_settings
from shardstats.core.events import HOUR_MS
from shardstats.errors import DataDirLocked, InvalidInput

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3

SERVE_EPILOG = """\
examples:
  shardstats serve                                  # 127.0.0.1:8080, data in ./snapshots
  shardstats serve --bind 0.0.0.0:9000 --data-dir /var/lib/shardstats
  shardstats serve --config config/shardstats.toml

Settings come from defaults < --config FILE (or $SHARDSTATS_CONFIG) < SHARDSTATS_* environment
variables < these flags. Stop with SIGTERM or Ctrl-C: queued events are committed, every open
hour is snapshotted, and the process exits 0. Exit 2: bad configuration; 3: data dir in use;
4: users.sqlite is older than the journals beside it (restored alone from a backup).
"""

VERIFY_EPILOG = """\
examples:
  shardstats verify --data-dir snapshots
  shardstats verify --data-dir snapshots --hour 2026-11-27T14:00Z --json
  shardstats verify --from 2026-11-01 --to 2026-11-27T23:59Z

Checks each hour's journal (SQLite integrity), recomputes its aggregate from the journal events,
compares it with the snapshot (counters and bitmap), and checks the user dictionary holds every
id. Never modifies anything; safe while the server runs.
Exit 0: all hours agree; 1: some hour is corrupt or disagrees; 2: usage error.
"""

COMPACT_EPILOG = """\
examples:
  shardstats compact --data-dir snapshots                 # hours older than 2 h
  shardstats compact --data-dir snapshots --margin-hours 24

For each closed hour: writes an up-to-date snapshot, replaces the user strings in the journal
by the ids already durable in the user dictionary, checkpoints and VACUUMs, and reports the
bytes before and after. Safe while the server runs and safe to interrupt (rerun to finish).
Exit 0: done; 1: some hour was skipped (reason printed); 2: usage error.
"""

EXPORT_EPILOG = """\
examples:
  shardstats export --data-dir snapshots --from 2026-11-01 --to 2026-11-01T23:59Z > day.csv
  shardstats export --format jsonl --bitmaps out/            # + <hour>.roaring, users.csv

Writes hour, hour_start, unique_users, clicks, impressions per hour with data. --bitmaps DIR
also writes each hour's user set in the portable Roaring format and the id->user mapping.
Exit 0: done; 1: an hour could not be read; 2: usage error.
"""

PRUNE_EPILOG = """\
examples:
  shardstats prune --data-dir snapshots --older-than 90d --dry-run
  shardstats prune --data-dir snapshots --older-than 90d --archive /backup/shardstats

Removes (or moves into --archive) the journals and snapshots of hours older than the limit;
a GET for a pruned hour then answers zeros. The server must be stopped (exit 3 otherwise).
Exit 0: done; 1: some hour could not be pruned (reason printed; its files are left in
place, the other hours are pruned); 2: usage error; 3: data directory locked by a running server.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardstats",
        description="Exact hourly web-traffic analytics from durable per-hour shards.",
    )
    parser.add_argument("--version", action="version", version=f"shardstats {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, epilog: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    serve = command("serve", "run the HTTP server", SERVE_EPILOG)
    serve.add_argument("--bind", metavar="HOST:PORT", help="address to listen on")
    serve.add_argument("--data-dir", metavar="DIR", help="data directory")
    serve.add_argument("--config", metavar="FILE", help="TOML settings file")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])
    serve.add_argument("--access-log", action="store_true", default=None,
                       help="log every request")

    verify = command("verify", "check journals, snapshots and the user dictionary agree",
                     VERIFY_EPILOG)
    _data_dir_flag(verify)
    _range_flags(verify)
    verify.add_argument("--json", action="store_true", help="print a JSON report")

    compact = command("compact", "fold closed hours into snapshots and shrink journals",
                      COMPACT_EPILOG)
    _data_dir_flag(compact)
    compact.add_argument("--margin-hours", type=int, default=2, metavar="N",
                         help="only hours older than the current hour by N (default 2)")
    _range_flags(compact)

    export = command("export", "write hour aggregates as CSV or JSON lines", EXPORT_EPILOG)
    _data_dir_flag(export)
    _range_flags(export)
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    export.add_argument("--bitmaps", metavar="DIR", help="also write <hour>.roaring + users.csv")

    prune = command("prune", "remove or archive hours older than a limit", PRUNE_EPILOG)
    _data_dir_flag(prune)
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d or 36h")
    prune.add_argument("--archive", metavar="DIR", help="move files here instead of deleting")
    prune.add_argument("--dry-run", action="store_true", help="list what would go")
    return parser


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="data directory (default: the configured one, ./snapshots)")


def _range_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hour", metavar="H", help="one hour: ISO time or hour number")
    parser.add_argument("--from", dest="start", metavar="T", help="epoch ms or ISO time")
    parser.add_argument("--to", dest="end", metavar="T", help="epoch ms or ISO time (inclusive)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        logging.basicConfig(level=logging.WARNING, format="shardstats %(levelname)s: %(message)s")
        handler = {"verify": _verify, "compact": _compact, "export": _export, "prune": _prune}
        return handler[args.command](args)
    except (ConfigError, InvalidInput) as exc:
        print(f"shardstats {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataDirLocked as exc:
        print(f"shardstats {args.command}: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except BrokenPipeError:  # `shardstats verify --json | head`: the reader has left
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from shardstats.server import run_server

    settings = load_settings(
        args.config,
        overrides={
            "bind": args.bind,
            "data_dir": args.data_dir,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "access_log": args.access_log,
        },
    )
    return run_server(settings)


def _datadir(args: argparse.Namespace) -> Any:
    from shardstats.storage.datadir import DataDir

    root = Path(args.data_dir or load_settings().data_dir)
    if not (root / "journals").is_dir():
        raise InvalidInput(f"{root} is not a shardstats data directory (no journals/ in it)")
    return DataDir(root)


def _hours(args: argparse.Namespace, datadir: Any) -> list[int]:
    from shardstats.ops.common import parse_hour, parse_time, select_hours

    if args.hour and (args.start or args.end):
        raise InvalidInput("give --hour or --from/--to, not both")
    if args.start and args.end and parse_time(args.end) < parse_time(args.start):
        raise InvalidInput("--to is before --from")
    return select_hours(
        datadir,
        hour=parse_hour(args.hour) if args.hour else None,
        start_ms=parse_time(args.start) if args.start else None,
        end_ms=parse_time(args.end) if args.end else None,
    )


def _progress(desc: str) -> Callable[[Iterable[int]], Iterable[int]]:
    from tqdm import tqdm

    def wrap(items: Iterable[int]) -> Iterable[int]:
        # disable=None: a bar on a terminal, silence when stderr is a pipe or file.
        bar: Iterable[int] = tqdm(
            items, desc=desc, unit="hour", file=sys.stderr, disable=None, leave=False
        )
        return bar

    return wrap


def _verify(args: argparse.Namespace) -> int:
    from shardstats.ops.verify import verify

    datadir = _datadir(args)
    report = verify(datadir, _hours(args, datadir), _progress("verify"))
    if args.json:
        print(json.dumps({"hours": [h.as_json() for h in report.hours],
                          "problems": report.problems, "summary": report.summary(),
                          "ok": report.ok}, indent=2))
    else:
        header = f"{'hour':<18} {'events':>10} {'users':>9} {'clicks':>10} {'impressions':>11}"
        print(header + "  status")
        for h in report.hours:
            detail = "; ".join(h.problems or h.notes)
            print(f"{h.iso:<18} {h.events:>10} {h.unique_users:>9} {h.clicks:>10} "
                  f"{h.impressions:>11}  {h.status}{' - ' + detail if detail else ''}")
        for problem in report.problems:
            print(f"FAIL: {problem}")
        s = report.summary()
        print(f"{s['hours']} hours, {s['events']} events, {s['failed_hours']} failed"
              + ("" if report.ok else " -- verification FAILED"))
    return EXIT_OK if report.ok else EXIT_FAIL


def _compact(args: argparse.Namespace) -> int:
    from shardstats.ops.compact import compact

    datadir = _datadir(args)
    if args.margin_hours < 1:
        raise InvalidInput("--margin-hours must be at least 1: the current hour stays open")
    limit = time.time_ns() // 1_000_000 // HOUR_MS - args.margin_hours
    hours = [h for h in _hours(args, datadir) if h < limit]
    results = compact(datadir, hours, _progress("compact"))
    before = after = 0
    for r in results:
        before += r.bytes_before
        after += r.bytes_after
        print(f"{r.iso:<18} {r.events:>10} events {r.bytes_before:>12} -> {r.bytes_after:>12} "
              f"bytes  {r.status}")
    skipped = [r for r in results if r.status.startswith("skipped")]
    print(f"{len(results)} hours, {before} -> {after} bytes, {len(skipped)} skipped")
    return EXIT_FAIL if skipped else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from shardstats.errors import StorageError
    from shardstats.ops.export import export

    datadir = _datadir(args)
    hours = _hours(args, datadir)
    bitmaps = Path(args.bitmaps) if args.bitmaps else None
    with contextlib.ExitStack() as stack:
        try:
            out = (stack.enter_context(open(args.output, "w", newline="", encoding="utf-8"))
                   if args.output else sys.stdout)
        except OSError as exc:
            raise InvalidInput(f"cannot write {args.output}: {exc.strerror}") from None
        try:
            count = export(datadir, hours, out, args.format, bitmaps, _progress("export"))
        except StorageError as exc:
            print(f"shardstats export: {exc}", file=sys.stderr)
            return EXIT_FAIL
    print(f"exported {count} hours", file=sys.stderr)
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    from shardstats.ops.common import parse_age_hours
    from shardstats.ops.prune import prunable, prune

    datadir = _datadir(args)
    age = parse_age_hours(args.older_than)
    current = time.time_ns() // 1_000_000 // HOUR_MS
    datadir.lock.acquire()
    try:
        results = prunable(datadir, current, age)
        verb = "would remove" if args.dry_run else "archived" if args.archive else "removed"
        failed = {} if args.dry_run else prune(
            datadir, results, Path(args.archive) if args.archive else None)
        for r in results:
            if r.hour in failed:
                print(f"FAILED {r.iso}: {failed[r.hour]} (its files are left in place)")
            else:
                print(f"{verb} {r.iso} ({len(r.files)} files, {r.bytes} bytes)")
        done = [r for r in results if r.hour not in failed]
        total = f"{len(done)} hours, {sum(r.bytes for r in done)} bytes"
        if args.dry_run:
            print(f"{total}: dry run, nothing removed")
        else:
            print(f"{total} {verb}" + (f" to {args.archive}" if args.archive else ""))
        if failed:
            print(f"{len(failed)} hours could not be pruned")
    finally:
        datadir.lock.release()
    return EXIT_FAIL if failed else EXIT_OK

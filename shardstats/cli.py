"""Command line: ``shardstats serve`` (more commands join as the tools grow).

Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 data directory locked by
another process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shardstats import __version__
from shardstats.config import ConfigError, load_settings

EXIT_USAGE = 2

SERVE_EPILOG = """\
examples:
  shardstats serve                                  # 127.0.0.1:8080, data in ./snapshots
  shardstats serve --bind 0.0.0.0:9000 --data-dir /var/lib/shardstats
  shardstats serve --config config/shardstats.toml

Settings come from defaults < --config FILE (or $SHARDSTATS_CONFIG) < SHARDSTATS_* environment
variables < these flags. Stop with SIGTERM or Ctrl-C: queued events are committed, every open
hour is snapshotted, and the process exits 0.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardstats",
        description="Exact hourly web-traffic analytics from durable per-hour shards.",
    )
    parser.add_argument("--version", action="version", version=f"shardstats {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the HTTP server (hypercorn, trio worker) in this process.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--bind", metavar="HOST:PORT", help="address to listen on")
    serve.add_argument("--data-dir", metavar="DIR", help="data directory")
    serve.add_argument("--config", metavar="FILE", help="TOML settings file")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", default=None,
                       help="log every request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from shardstats.server import run_server

        try:
            settings = load_settings(
                args.config,
                overrides={
                    "bind": args.bind,
                    "data_dir": args.data_dir,
                    "log_level": args.log_level,
                    "access_log": args.access_log,
                },
            )
        except ConfigError as exc:
            print(f"shardstats: configuration error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return run_server(settings)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands

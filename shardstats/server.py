"""Run the app under hypercorn's trio worker in this process, with graceful shutdown.

SIGTERM or SIGINT: hypercorn stops accepting, lets in-flight requests finish within
``graceful_timeout_seconds``, then the lifespan shutdown drains every shard, snapshots and
releases the data-dir lock; the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from shardstats.config import Settings
from shardstats.core.validation import query_limit
from shardstats.errors import DataDirLocked, DictionaryBehind
from shardstats.http.app import App, create_app
from shardstats.logs import configure_logging
from shardstats.shards.service import Service

log = logging.getLogger("shardstats")

EXIT_LOCKED = 3
EXIT_DICTIONARY_BEHIND = 4


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [settings.bind]
    config.backlog = settings.backlog
    config.graceful_timeout = settings.graceful_timeout_seconds
    # The default closes a connection after 1,000 requests; clients reuse connections.
    config.keep_alive_max_requests = 1_000_000
    config.keep_alive_timeout = 75
    # The request head must fit the longest valid query (a maximal user id, percent-encoded).
    config.h11_max_incomplete_size = query_limit(settings.max_user_bytes) + 8 * 1024
    config.read_timeout = 60
    # Hand hypercorn our loggers so its lines share our format and are not printed twice.
    config.accesslog = logging.getLogger("hypercorn.access") if settings.access_log else None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def run_server(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    service = Service(settings)
    try:
        service.acquire_lock()
    except DataDirLocked as exc:
        print(f"shardstats: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except DictionaryBehind as exc:
        print(f"shardstats: refusing to start: {exc}", file=sys.stderr)
        return EXIT_DICTIONARY_BEHIND
    except OSError as exc:
        print(f"shardstats: cannot use data directory {settings.data_dir}: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings, service)
    app.quart.config["SHARDSTATS_FREEZE_GC"] = True
    try:
        trio.run(_serve, app, hypercorn_config(settings), settings)
    except KeyboardInterrupt:  # a second Ctrl-C: give up on graceful shutdown
        return 130
    except BaseExceptionGroup as group:
        unusable = group.subgroup(lambda exc: isinstance(exc, OSError))
        if unusable is None:
            raise
        first = _first_leaf(unusable)
        print(f"shardstats: cannot listen on {settings.bind}: {first.strerror or first}",
              file=sys.stderr)
        return 1
    finally:
        # Shutdown is complete (or abandoned): a late SIGTERM must not turn exit 0 into a
        # death by signal while the interpreter tears down.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        service.datadir.lock.release()
    return 0


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, OSError)
    return exc


async def _serve(app: App, config: HypercornConfig, settings: Settings) -> None:
    stop = trio.Event()
    # The receiver stays open until shutdown is complete: a second SIGTERM (a supervisor
    # and `timeout` both signalling, say) must not kill the process mid-snapshot.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, signals, stop)
            binds = await nursery.start(_serve_hypercorn, app, config, stop, nursery.cancel_scope)
            # Printed whatever the log level: operators and scripts (port 0) read it.
            print(f"shardstats: listening on {', '.join(binds)} (data dir "
                  f"{settings.data_path.resolve()})", file=sys.stderr, flush=True)


async def _serve_hypercorn(
    app: App,
    config: HypercornConfig,
    stop: trio.Event,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
    finally:
        stop.set()
        done.cancel()  # hypercorn and the lifespan are finished: stop watching signals


async def _on_signals(signals: AsyncIterator[int], stop: trio.Event) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.info("%s received: already shutting down", name)
        else:
            log.info("%s received: shutting down gracefully", name)
            stop.set()

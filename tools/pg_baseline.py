"""The seed's design as a yardstick: the shardstats HTTP API backed by PostgreSQL.

One ``INSERT`` per POST (autocommit, ``synchronous_commit=on``: the 204 is as durable as
shardstats'), one ``count(DISTINCT user_id)`` over the hour's rows per GET. Same stack as
shardstats (Quart-Trio under hypercorn with ``shardstats.server.hypercorn_config``) and the
same query-string validation (``shardstats.core.validation``), so the difference measured
is the storage design. The driver is psycopg 3 (synchronous connections from a small pool,
each call in a worker thread: psycopg's async API is asyncio-only).

Not a product feature: it lives in ``tools/`` for ``tools/bench.py``. By hand::

    python -m tools.pg_baseline cluster                  # private cluster; prints its DSN
    python -m tools.pg_baseline serve --dsn DSN --bind 127.0.0.1:8081

``cluster`` runs ``initdb`` and ``postgres`` from PATH or /usr/lib/postgresql/*/bin in a
temporary directory, on a free loopback port, as user ``nobody`` when started as root
(PostgreSQL refuses to run as root), and deletes everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import trio
from quart import request
from quart_trio import QuartTrio

from shardstats.core.events import HOUR_MS, hour_of
from shardstats.core.validation import Limits, event_from_query, timestamp_from_query
from shardstats.errors import InvalidInput
from tools.bench_apps import serve_until_signal

log = logging.getLogger("pg_baseline")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    ts      bigint   NOT NULL,
    user_id text     NOT NULL,
    kind    smallint NOT NULL  -- 1 click, 2 impression
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""
INSERT = "INSERT INTO events (ts, user_id, kind) VALUES (%s, %s, %s)"
COUNT = (
    "SELECT count(DISTINCT user_id), count(*) FILTER (WHERE kind = 1), "
    "count(*) FILTER (WHERE kind = 2) FROM events WHERE ts >= %s AND ts < %s"
)


def psycopg_module() -> Any:
    try:
        # Imported by name: psycopg is an optional (bench) dependency, absent from the test
        # environment where mypy runs.
        psycopg = importlib.import_module("psycopg")
    except ImportError:
        raise SystemExit(
            "the PostgreSQL baseline needs psycopg 3: pip install 'psycopg[binary]>=3.2' "
            "(the project's bench extra)"
        ) from None
    return psycopg


def find_pg_binary(name: str) -> str:
    """``name`` from /usr/lib/postgresql/<newest>/bin, else from PATH."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"PostgreSQL's {name} not found (apt-get install postgresql puts it in "
        "/usr/lib/postgresql/VERSION/bin)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A throwaway PostgreSQL cluster: ``with PgCluster() as pg: pg.dsn``."""

    def __init__(self, cpus: str | None = None, port: int | None = None) -> None:
        self.cpus = cpus
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="shardstats-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.as_user: str | None = "nobody" if os.geteuid() == 0 else None
        self.version = ""

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _popen_user(self) -> dict[str, Any]:
        if self.as_user is None:
            return {}
        entry = pwd.getpwnam(self.as_user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        if self.as_user is not None:
            entry = pwd.getpwnam(self.as_user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}
        initdb = find_pg_binary("initdb")
        postgres = find_pg_binary("postgres")
        self.version = subprocess.run([postgres, "--version"], capture_output=True, text=True,
                                      check=False).stdout.strip()
        result = subprocess.run(
            [initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            capture_output=True, text=True, env=env, cwd=self.base, check=False,
            **self._popen_user(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr[-2000:]}")
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        with open(self.log_path, "wb") as log_file:
            if self.as_user is not None:
                entry = pwd.getpwnam(self.as_user)
                os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
            self.proc = subprocess.Popen(
                [*pin, postgres, "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.base), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                cwd=self.base, **self._popen_user(),
            )
        psycopg = psycopg_module()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_path.read_text()[-2000:]}")
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(SCHEMA)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready within {timeout} s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def bulk_load(dsn: str, rows: Iterable[tuple[int, str, int]]) -> int:
    """COPY ``(ts, user_id, kind)`` rows in (fast set-up for the GET measurement)."""
    psycopg = psycopg_module()
    count = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy("COPY events (ts, user_id, kind) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        conn.execute("ANALYZE events")
    return count


def create_app(dsn: str, pool_size: int = 16, limits: Limits | None = None) -> QuartTrio:
    psycopg = psycopg_module()
    limits = limits or Limits()
    app = QuartTrio(__name__)
    pool_send, pool_receive = trio.open_memory_channel[Any](pool_size)
    state: dict[str, bool] = {"ready": False}

    @app.before_serving
    async def open_pool() -> None:
        def connect() -> Any:
            return psycopg.connect(dsn, autocommit=True)

        for _ in range(pool_size):
            pool_send.send_nowait(await trio.to_thread.run_sync(connect))
        state["ready"] = True

    @app.after_serving
    async def close_pool() -> None:
        state["ready"] = False
        while True:
            try:
                conn = pool_receive.receive_nowait()
            except trio.WouldBlock:
                return
            conn.close()

    async def run(sql: str, params: tuple[Any, ...]) -> Any:
        conn = await pool_receive.receive()
        try:
            def call() -> Any:
                cur = conn.execute(sql, params)
                return cur.fetchone() if cur.description else None

            return await trio.to_thread.run_sync(call)
        finally:
            pool_send.send_nowait(conn)

    @app.post("/analytics", provide_automatic_options=False)
    async def post_event() -> Any:
        try:
            event = event_from_query(request.query_string, time.time_ns() // 1_000_000, limits)
        except InvalidInput as exc:
            return "", 400, {"X-Shardstats-Error": str(exc)}
        await run(INSERT, (event.timestamp_ms, event.user, int(event.kind)))
        return "", 204

    @app.get("/analytics", provide_automatic_options=False)
    async def get_counts() -> Any:
        try:
            hour = hour_of(timestamp_from_query(request.query_string))
        except InvalidInput as exc:
            return {"error": str(exc)}, 400
        users, clicks, impressions = await run(COUNT, (hour * HOUR_MS, (hour + 1) * HOUR_MS))
        return {"unique_users": users, "clicks": clicks, "impressions": impressions}, 200

    @app.get("/healthz")
    async def healthz() -> Any:
        if state["ready"]:
            return {"status": "ready"}, 200
        return {"status": "starting"}, 503, {"Retry-After": "1"}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pg_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the HTTP API on a PostgreSQL database")
    p_serve.add_argument("--dsn", required=True)
    p_serve.add_argument("--bind", default="127.0.0.1:0", metavar="HOST:PORT")
    p_serve.add_argument("--pool", type=int, default=16, help="database connections (16)")
    p_cluster = sub.add_parser("cluster", help="run a throwaway cluster until Ctrl-C")
    p_cluster.add_argument("--cpus", default=None, help="taskset CPU list for postgres")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        trio.run(serve_until_signal, create_app(args.dsn, args.pool), args.bind)
        return 0
    with PgCluster(cpus=args.cpus) as pg:
        print(f"{pg.version}: {pg.dsn} (data in {pg.base}); Ctrl-C stops and deletes it",
              flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

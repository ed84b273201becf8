"""Configuration of local nats-servers with JetStream: one, or three clustered, on 127.0.0.1.

For operators trying cluster mode on one machine, and for the tools that start servers.
``render_config`` is the one template: ``config/nats/n1.conf`` .. ``n3.conf`` are rendered from
it with fixed ports (a test checks they have not drifted; ``python -m
shardstats.cluster.natsproc write-configs DIR`` writes them), and ``tools/spawn.py`` renders it
with free ports (``free_ports``) for the servers it starts for tests and benchmarks.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLUSTER_NAME = "shardstats"


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

"""Cluster mode on one machine: three nats-servers, three shardstats nodes, HAProxy in front.

    python -m tools.cluster up      # start in the background, print the URLs, return
    python -m tools.cluster status  # what runs, and each node's /healthz (exit 1 if any is not OK)
    python -m tools.cluster down    # stop everything: SIGTERM, SIGKILL after a bound
    make cluster                    # = up --foreground: Ctrl-C stops everything

Everything lives in a run directory (``--dir``, default ``./cluster-run``): the nats-server
configurations (rendered by ``shardstats.cluster.natsproc.render_config``; with the default
ports they are byte for byte the shipped ``config/nats/n1..n3.conf``), the JetStream stores
(``nats-data/``), one data directory per node (``node1`` ..), every process's log
(``logs/``), the HAProxy configuration, and ``cluster.json``: what was started (pids), which
``status`` and ``down`` read. Processes run in sessions of their own, so ``up`` can return
and a Ctrl-C in the terminal reaches only this tool, which then stops them in order: proxy,
nodes (they finish what they publish), nats-servers.

Ports (``--ports default``): load balancer 8080, nodes 8081-8083, NATS clients 4222-4224,
routes 6222-6224, monitoring 8222-8224. ``--ports auto`` takes free ports instead (tests).
HAProxy runs only when ``haproxy`` is on PATH; the nodes are usable directly without it.
Before signalling a pid from ``cluster.json`` the tool checks that its command line is still
the program it started (a reused pid is left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from shardstats.cluster.natsproc import ServerPorts, free_ports
from tools import spawn

STATE_FILE = "cluster.json"
READY_SECONDS = 60.0  # each group (nats-servers, nodes, proxy) must be ready within this
NODE_STOP_SECONDS = 30.0  # a node's graceful_timeout (10 s) plus snapshots, with margin
STOP_SECONDS = 10.0  # nats-server and haproxy on SIGTERM
POLL = 0.1
NODES = 3
DEFAULT_PORTS = {"proxy": 8080, "node": 8081, "client": 4222, "route": 6222, "monitor": 8222}


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    proxy: int
    nodes: tuple[int, ...]
    nats: tuple[ServerPorts, ...]

    @classmethod
    def default(cls) -> Layout:
        p = DEFAULT_PORTS
        return cls(p["proxy"], tuple(p["node"] + i for i in range(NODES)),
                   tuple(ServerPorts(p["client"] + i, p["route"] + i, p["monitor"] + i)
                         for i in range(3)))

    @classmethod
    def free(cls) -> Layout:
        ports = free_ports(1 + NODES + 9)
        return cls(ports[0], tuple(ports[1:1 + NODES]),
                   tuple(ServerPorts(*ports[1 + NODES + 3 * i:4 + NODES + 3 * i])
                         for i in range(3)))

    @property
    def nats_urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p.client}" for p in self.nats)


def haproxy_config(proxy_port: int, node_ports: Sequence[int], host: str = "127.0.0.1") -> str:
    """``config/haproxy.cfg`` (default ports; a test checks the file has not drifted)."""
    servers = "".join(
        f"    server node{i + 1} {host}:{port} check\n" for i, port in enumerate(node_ports)
    )
    return f"""# HAProxy in front of shardstats nodes (rendered by tools/cluster.py).
# Round robin; a node leaves the rotation when /healthz fails twice (it answers 503 while it
# recovers or catches up with the stream) and rejoins after two passes.
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # Only a failed connection is retried (the request never reached a node), on another node.
    retries 2
    option redispatch

frontend shardstats
    bind {host}:{proxy_port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
{servers}"""


# -- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    """One process started by ``up``: what ``status`` and ``down`` need to know about it."""

    name: str
    role: str  # "nats" | "node" | "proxy"
    pid: int
    program: str  # part of its command line, checked before signalling the pid
    url: str
    health: str  # URL that answers 200 when it is ready
    log: str


def launch(role: str, process: spawn.HttpServer | spawn.NatsServer, program: str,
           health: str) -> Child:
    """Spawn ``process`` (in a session of its own) and describe it for ``cluster.json``."""
    process.spawn()
    _started[process.pid] = process
    return Child(process.name, role, process.pid, program, process.url, health,
                 str(process.log_path))


# Processes this very process started (up, and up --foreground until it stops them). Between
# fork and exec a child's command line is still ours, so it is judged by its handle.
_started: dict[int, spawn.Child] = {}


def alive(child: Child) -> bool:
    """Running (not a zombie) and still the program we started."""
    handle = _started.get(child.pid)
    if handle is not None:
        return handle.running()
    proc = Path(f"/proc/{child.pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state != "Z" and child.program in cmdline


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        return 0, repr(exc)


def wait_ready(children: Sequence[Child], within: float) -> None:
    """Every child of a group (started together) ready within ``within`` of now."""
    deadline = time.monotonic() + within
    for child in children:
        _started[child.pid].wait_ready(max(0.1, deadline - time.monotonic()))


def tail(child: Child, lines: int = 30) -> str:
    try:
        return "\n".join(Path(child.log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(children: Sequence[Child], within: float) -> list[Child]:
    """SIGTERM all at once, wait up to ``within``, SIGKILL the rest; returns those killed."""
    for child in children:
        if alive(child):
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + within
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(POLL)
    killed = [c for c in children if alive(c)]
    for child in killed:
        os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(alive(c) for c in killed) and time.monotonic() < deadline:
        time.sleep(POLL)
    return killed


def stop_all(children: Sequence[Child]) -> None:
    """In dependency order: the proxy, the nodes (they still publish), then NATS."""
    for role, within in (("proxy", STOP_SECONDS), ("node", NODE_STOP_SECONDS),
                         ("nats", STOP_SECONDS)):
        group = [c for c in children if c.role == role]
        for child in stop(group, within):
            print(f"{child.name} did not stop within {within:.0f} s: killed", file=sys.stderr)


# -- commands ---------------------------------------------------------------------------------


def load_state(run_dir: Path) -> list[Child]:
    path = run_dir / STATE_FILE
    if not path.exists():
        return []
    return [Child(**item) for item in json.loads(path.read_text())["children"]]


def save_state(run_dir: Path, children: Sequence[Child]) -> None:
    path = run_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"children": [asdict(c) for c in children]}, indent=1))
    temporary.replace(path)


def start(run_dir: Path, layout: Layout) -> list[Child]:
    """Start everything and wait until ready; on failure stop what was started and raise."""
    logs = run_dir / "logs"
    children: list[Child] = []
    try:
        routes = [p.cluster for p in layout.nats]
        for i, ports in enumerate(layout.nats):
            nats = spawn.NatsServer(run_dir, f"n{i + 1}", ports, routes,
                                    store=f"nats-data/n{i + 1}", log_path=logs / f"n{i + 1}.log",
                                    new_session=True)
            children.append(launch("nats", nats, nats.binary, f"{nats.monitor_url}/healthz"
                                   "?js-enabled-only=true"))
        save_state(run_dir, children)
        wait_ready(children, READY_SECONDS)

        nodes = []
        for i, port in enumerate(layout.nodes):
            name = f"node{i + 1}"
            env = {"SHARDSTATS_CLUSTER_NATS_URLS": layout.nats_urls, "SHARDSTATS_NODE_NAME": name}
            node = spawn.ShardstatsServer((run_dir / name).resolve(), logs / f"{name}.log", env,
                                          bind=f"127.0.0.1:{port}", isolated=False,
                                          new_session=True, name=name)
            nodes.append(launch("node", node, "shardstats", f"{node.url}/healthz"))
        children += nodes
        save_state(run_dir, children)
        wait_ready(nodes, READY_SECONDS)

        haproxy = shutil.which("haproxy")
        if haproxy is not None:
            conf = run_dir / "haproxy.cfg"
            conf.write_text(haproxy_config(layout.proxy, layout.nodes))
            proxy = spawn.HttpServer([haproxy, "-db", "-f", conf.name], logs / "haproxy.log",
                                     url=f"http://127.0.0.1:{layout.proxy}", cwd=run_dir,
                                     new_session=True, name="haproxy")
            children.append(launch("proxy", proxy, haproxy, f"{proxy.url}/healthz"))
            save_state(run_dir, children)
            wait_ready(children[-1:], READY_SECONDS)
    except BaseException:
        stop_all(children)
        save_state(run_dir, [])
        raise
    return children


def describe(children: Sequence[Child], run_dir: Path) -> str:
    lines = [f"cluster running (state: {run_dir / STATE_FILE})"]
    proxy = [c for c in children if c.role == "proxy"]
    if proxy:
        lines.append(f"  load balancer  {proxy[0].url}  (HAProxy, round robin, /healthz checks)")
    else:
        lines.append("  load balancer  none (haproxy not installed): use the nodes directly")
    lines += [f"  {c.name:<13}  {c.url}" for c in children if c.role == "node"]
    nats = [c for c in children if c.role == "nats"]
    lines.append(f"  NATS           {','.join(c.url for c in nats)}")
    lines.append(f"  logs           {run_dir / 'logs'}")
    return "\n".join(lines)


def cmd_up(run_dir: Path, layout: Layout, foreground: bool) -> int:
    if any(alive(c) for c in load_state(run_dir)):
        print(f"a cluster already runs from {run_dir}: python -m tools.cluster down "
              f"--dir {run_dir}", file=sys.stderr)
        return 1
    try:
        children = start(run_dir, layout)
    except RuntimeError as exc:
        print(f"cluster up failed: {exc}", file=sys.stderr)
        return 1
    print(describe(children, run_dir), flush=True)
    if not foreground:
        print(f"stop with: python -m tools.cluster down --dir {run_dir}")
        return 0
    return run_foreground(run_dir, children)


def run_foreground(run_dir: Path, children: Sequence[Child]) -> int:
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    print("Ctrl-C stops everything", flush=True)  # only now: the handlers are in place
    try:
        while not stopping:
            gone = [c for c in children if not alive(c)]
            if gone:
                print(f"{gone[0].name} exited; stopping the cluster. Its log:\n{tail(gone[0])}",
                      file=sys.stderr)
                break
            time.sleep(0.2)
        print("stopping ...", flush=True)
        stop_all(children)
        save_state(run_dir, [])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else 1


def cmd_down(run_dir: Path) -> int:
    children = load_state(run_dir)
    running = [c for c in children if alive(c)]
    stop_all(running)
    save_state(run_dir, [])
    print(f"stopped {len(running)} processes" if running else "nothing was running")
    return 0


def cmd_status(run_dir: Path) -> int:
    children = load_state(run_dir)
    if not children:
        print(f"no cluster started from {run_dir}")
        return 1
    healthy = True
    for child in children:
        running = alive(child)
        status, body = get(child.health) if running else (0, "")
        healthy = healthy and running and status == 200
        state = f"pid {child.pid:<7} " + ("running" if running else "STOPPED")
        health = f"healthz {status} {body.strip()[:200]}" if running else ""
        print(f"{child.role:<5} {child.name:<8} {state:<20} {child.url:<24} {health}")
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=Path("cluster-run"),
                        help="run directory (default ./cluster-run)")
    parser.add_argument("--ports", choices=["default", "auto"], default="default",
                        help="default: 8080-8083 and NATS 4222.. (see above); auto: free ports")
    parser.add_argument("--foreground", action="store_true",
                        help="up: stay in the foreground; Ctrl-C or SIGTERM stops everything")
    args = parser.parse_args(argv)
    run_dir: Path = args.dir
    if args.command == "up":
        layout = Layout.default() if args.ports == "default" else Layout.free()
        return cmd_up(run_dir, layout, args.foreground)
    if args.command == "down":
        return cmd_down(run_dir)
    return cmd_status(run_dir)


if __name__ == "__main__":
    raise SystemExit(main())

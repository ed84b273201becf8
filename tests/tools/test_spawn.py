"""``tools.spawn`` on small stand-in servers: ready, restart on a new port, signals, bounded
waits, and the errors that carry the log. (The real servers are started by every e2e test.)"""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path

import pytest
import trio

from tools.spawn import Child, HttpServer, ProcessExited, SpawnError

# An HTTP server on port 0 that says where it listens, as shardstats and bench_apps do.
TINY_SERVER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(f"tiny: listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
"""


def tiny(tmp_path: Path) -> HttpServer:
    return HttpServer([sys.executable, "-c", TINY_SERVER], tmp_path / "tiny.log", name="tiny")


def test_start_restart_and_signals(tmp_path: Path) -> None:
    with tiny(tmp_path) as server:
        first = server.url
        with urllib.request.urlopen(first + "/healthz", timeout=5) as response:
            assert response.status == 200
        assert server.ready_seconds > 0 and server.running()
        server.kill()
        assert server.returncode == -signal.SIGKILL
        server.start()  # the same log file; the port is read from this start's line
        assert server.log().count("listening on") == 2
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as response:
            assert response.status == 200
        assert server.stop() >= 0 and server.returncode == -signal.SIGTERM
        assert server.stop() == 0.0  # not running: nothing to do


def test_trio_callers_wait_in_a_thread(tmp_path: Path) -> None:
    server = tiny(tmp_path)

    async def scenario() -> int:
        await server.astart()
        server.terminate()
        return await server.await_exit(10)

    assert trio.run(scenario) == -signal.SIGTERM


def test_a_process_that_exits_while_awaited_raises_with_its_log(tmp_path: Path) -> None:
    server = HttpServer([sys.executable, "-c", "print('no port for you'); raise SystemExit(3)"],
                        tmp_path / "exits.log")
    with pytest.raises(ProcessExited, match=r"(?s)exited with code 3.*no port for you"):
        server.start(within=20)


def test_waits_are_bounded(tmp_path: Path) -> None:
    with Child([sys.executable, "-c", "import time; time.sleep(60)"],
               tmp_path / "sleeps.log") as child:
        with pytest.raises(SpawnError, match=r"not done waiting for nothing within 0\.2 s"):
            child.poll_until(lambda: False, 0.2, "waiting for nothing")
        with pytest.raises(SpawnError, match="still running"):
            child.wait_exit(0.1)
    assert child.returncode == -signal.SIGKILL  # the with block killed it

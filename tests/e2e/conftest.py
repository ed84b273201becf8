"""Real server processes for end-to-end tests.

``shardstats_server`` is a factory: ``start(data_dir, env)`` runs
``python -m shardstats serve --bind 127.0.0.1:0 --data-dir DIR`` in a child process, reads the
real port from the ``listening on http://127.0.0.1:PORT`` log line and waits (bounded) until
``GET /healthz`` answers 200. Every process it started is SIGKILLed at teardown if it is still
running. Each process writes stdout and stderr to its own file under the test's ``tmp_path``;
when a test fails, the tail of every such file is added to the failure report.

Environment: the child gets this process's environment minus every ``SHARDSTATS_*`` variable
(so an operator's settings cannot leak in), plus ``TZ=UTC`` unless the test sets ``TZ``, plus
whatever the test passes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import trio

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
SERVER_LOGS = pytest.StashKey[list[Path]]()
LOG_TAIL_LINES = 150

START_TIMEOUT = 20.0  # seconds until "listening on" and /healthz 200 (imports included)
POLL = 0.02


class ServerGone(AssertionError):
    """The server process exited while we waited for it."""


class ServerProcess:
    """One ``shardstats serve`` child process."""

    def __init__(self, data_dir: Path, log_path: Path, env: Mapping[str, str],
                 bind: str = "127.0.0.1:0") -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = dict(env)
        self.port: int | None = None
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shardstats", "serve",
                 "--bind", bind, "--data-dir", str(data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
            )

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        assert self.port is not None, "server has not said where it listens yet"
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def _check_running(self, what: str) -> None:
        code = self.proc.poll()
        if code is not None:
            raise ServerGone(
                f"server (pid {self.pid}) exited with code {code} while {what}; its log:\n"
                f"{self.log()}"
            )

    # -- waiting until it serves ---------------------------------------------------------------

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while True:
            match = LISTENING.search(self.log())
            if match:
                self.port = int(match.group(1))
                return self.port
            self._check_running("waiting for 'listening on'")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"server (pid {self.pid}) did not log 'listening on' within {timeout} s; "
                    f"its log:\n{self.log()}"
                )
            time.sleep(POLL)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                try:
                    response = client.get("/healthz")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text}"
                except httpx.TransportError as exc:
                    last = exc
                self._check_running("waiting for /healthz")
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"/healthz not 200 within {timeout} s (last: {last}); log:\n{self.log()}"
                    )
                time.sleep(POLL)

    # -- stopping ------------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        if self.running():
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and reap it (a killed process exits at once)."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server (pid {self.pid}) still running {timeout} s later; log:\n{self.log()}"
            ) from None

    async def await_exit(self, within: float) -> int:
        """Like ``wait_exit`` without blocking the trio loop (polls)."""
        deadline = trio.current_time() + within
        while True:
            code = self.proc.poll()
            if code is not None:
                return code
            if trio.current_time() > deadline:
                raise AssertionError(
                    f"server (pid {self.pid}) still running {within} s later; "
                    f"log:\n{self.log()}"
                )
            await trio.sleep(POLL)


class ServerFactory:
    """Starts servers for one test and kills whatever is left at teardown."""

    def __init__(self, log_dir: Path, logs: list[Path]) -> None:
        self._log_dir = log_dir
        self._logs = logs
        self._servers: list[ServerProcess] = []

    def environment(self, env: Mapping[str, str] | None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSTATS_")}
        base["TZ"] = "UTC"
        base["PYTHONUNBUFFERED"] = "1"
        base.update(env or {})
        return base

    def spawn(self, data_dir: Path, env: Mapping[str, str] | None = None,
              bind: str = "127.0.0.1:0") -> ServerProcess:
        """Start a process and return at once (no waiting). ``bind``: a fixed port, say to
        restart a server where its clients look for it."""
        log_path = self._log_dir / f"server-{len(self._servers) + 1}.log"
        server = ServerProcess(data_dir, log_path, self.environment(env), bind)
        self._servers.append(server)
        self._logs.append(log_path)
        return server

    def start(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
        bind: str = "127.0.0.1:0",
    ) -> ServerProcess:
        """Start a process and return once ``/healthz`` answers 200."""
        server = self.spawn(data_dir, env, bind)
        deadline = time.monotonic() + timeout
        server.wait_listening(timeout)
        server.wait_healthy(max(1.0, deadline - time.monotonic()))
        return server

    async def astart(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        within: float = START_TIMEOUT,
    ) -> ServerProcess:
        """``start`` for trio tests (runs in a worker thread)."""
        return await trio.to_thread.run_sync(
            functools.partial(self.start, data_dir, env, within)
        )

    def cleanup(self) -> None:
        for server in self._servers:
            if server.running():
                server.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # the kernel is stuck
                server.proc.wait(timeout=10)


@pytest.fixture
def shardstats_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ServerFactory]:
    log_dir = tmp_path / "server-logs"
    log_dir.mkdir()
    logs = request.node.stash.setdefault(SERVER_LOGS, [])
    factory = ServerFactory(log_dir, logs)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory path that does not exist yet (the server creates it)."""
    return tmp_path / "data"


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    skipped = len(lines) - LOG_TAIL_LINES
    head = [f"... ({skipped} earlier lines in {path})"] if skipped > 0 else []
    return "\n".join(head + lines[-LOG_TAIL_LINES:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for path in item.stash.get(SERVER_LOGS, []):
            report.sections.append((f"shardstats server log {path.name}", _tail(path)))
    return report

"""Real server processes for end-to-end tests (``tools.spawn.ShardstatsServer``).

``shardstats_server`` is a factory: ``start(data_dir, env)`` (``astart`` from trio) runs
``python -m shardstats serve --bind 127.0.0.1:0 --data-dir DIR`` and returns once it listens
and ``GET /healthz`` answers 200; ``spawn`` returns at once. Every process it started is
SIGKILLed at teardown if it is still running. Each process writes stdout and stderr to its own
file under the test's ``tmp_path``; when a test fails, the tail of every such file is added to
the failure report. The environment is ``tools.spawn.server_env(env)``: no ``SHARDSTATS_*``
variable of this process, ``TZ=UTC`` unless the test sets ``TZ``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tools.spawn import ShardstatsServer

SERVER_LOGS = pytest.StashKey[list[Path]]()
LOG_TAIL_LINES = 150


class ServerFactory:
    """Starts servers for one test and kills whatever is left at teardown."""

    def __init__(self, log_dir: Path, logs: list[Path]) -> None:
        self._log_dir = log_dir
        self._logs = logs
        self._servers: list[ShardstatsServer] = []

    def spawn(self, data_dir: Path, env: Mapping[str, str] | None = None, *,
              bind: str = "127.0.0.1:0") -> ShardstatsServer:
        """Start a process and return at once (no waiting). ``bind``: a fixed port, say to
        start a server again where its clients look for it."""
        log_path = self._log_dir / f"server-{len(self._servers) + 1}.log"
        server = ShardstatsServer(data_dir, log_path, env, bind=bind)
        self._servers.append(server)
        self._logs.append(log_path)
        return server.spawn()

    def start(self, data_dir: Path, env: Mapping[str, str] | None = None,
              within: float | None = None, *, bind: str = "127.0.0.1:0") -> ShardstatsServer:
        """Start a process and return once ``/healthz`` answers 200."""
        return self.spawn(data_dir, env, bind=bind).wait_ready(within)

    async def astart(self, data_dir: Path, env: Mapping[str, str] | None = None,
                     within: float | None = None) -> ShardstatsServer:
        return await self.spawn(data_dir, env).await_ready(within)

    def cleanup(self) -> None:
        for server in self._servers:
            server.kill()


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

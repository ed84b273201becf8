"""Disk full: with the data directory on a small tmpfs, fill the disk while POSTs run.

A POST that cannot be made durable must not get a 204; the server stays up and answers GETs;
once space is freed, POSTs succeed again without a restart; no acknowledged event is lost.
Needs permission to mount a tmpfs (root or CAP_SYS_ADMIN); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerFactory
from tools.loadgen.ledger import ZERO, Counts, Event, Ledger, check, check_hour

HOUR = 3_600_000
pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> Path:
    """Write until ENOSPC; return the filler file (delete it to free the space)."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError), open(path / "filler-2", "wb") as handle:
        while True:  # the last few bytes too
            handle.write(b"\0" * 512)
            handle.flush()
    return filler


def post(client: httpx.Client, ts: int, user: str, event: str = "click") -> int:
    return client.post(f"/analytics?timestamp={ts}&user={user}&event={event}").status_code


def test_disk_full_fails_posts_cleanly_and_recovers(
    shardstats_server: ServerFactory, small_disk: Path
) -> None:
    data_dir = small_disk / "data"
    server = shardstats_server.start(data_dir)
    now = int(time.time() * 1000)
    ledger = Ledger()

    def record(client: httpx.Client, ts: int, user: str) -> int:
        event = Event(ts, user, "click")
        ledger.record_sent(event)
        status = post(client, ts, user)
        if status == 204:
            ledger.record_acked(event)
        return status

    def read_back(client: httpx.Client) -> dict[int, Counts]:
        return {hour: Counts.from_json(client.get(f"/analytics?timestamp={hour * HOUR}").json())
                for hour in ledger.hours}

    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(20):
            assert record(client, now, f"before-{i}") == 204
        filler = fill(small_disk)
        statuses = []
        # New hours need new journal files and new users need dictionary pages: on a full
        # disk those commits cannot be durable.
        for i in range(60):
            statuses.append(record(client, now - (i % 20 + 1) * HOUR, f"during-{i}-" + "x" * 50))
        assert set(statuses) <= {204, 500, 503}, statuses
        assert statuses.count(500) + statuses.count(503) > 0, "the disk never looked full"
        # Still up, still answering.
        assert client.get("/healthz").status_code == 200
        response = client.get(f"/analytics?timestamp={now}")
        assert response.status_code == 200
        verdict = check_hour(now // HOUR, ledger.hours[now // HOUR], ZERO,
                             Counts.from_json(response.json()))
        assert verdict.ok and verdict.exact, verdict.as_dict()  # every one was acknowledged

        filler.unlink()
        (small_disk / "filler-2").unlink()
        for i in range(20):  # no restart needed
            assert record(client, now - (i % 20 + 1) * HOUR, f"after-{i}") == 204

        result = check(ledger, read_back(client))
    assert result.ok, result.problems

    server.kill()
    restarted = shardstats_server.start(data_dir)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        got = read_back(client)
    result = check(ledger, got)
    assert result.ok, result.problems
    for counts in got.values():
        assert counts.clicks == counts.unique_users  # one click per distinct user sent
    assert os.path.ismount(small_disk)

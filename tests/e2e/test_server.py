"""End-to-end tests: real ``shardstats serve`` processes, real sockets, real files.

The oracle is the load generator's ledger (``tools.loadgen.ledger``): for every UTC hour, the
set of users and the click and impression counts of the requests the clients *sent* and of
those the server *acknowledged* (answered 204). With no crash the server must answer exactly the
acknowledged counts. Across a crash (SIGKILL) an event in flight may or may not have been
committed, so every counter must lie between the two: acked <= counted <= sent (``check``). An
acknowledged event that is missing after a restart breaks "acknowledged means durable"; one
counted twice, or in the wrong hour, breaks the upper bound.

Timestamps come from the real clock so that they fall inside the server's POST acceptance
window (now - 30 days .. now + 10 minutes). Nothing here sleeps to synchronise: every wait polls
a condition under a deadline.
"""

from __future__ import annotations

import itertools
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from shardstats.core import snapshot as snapshot_codec
from tools.loadgen.ledger import ZERO, Counts, Event, Ledger, check, check_bounds

if TYPE_CHECKING:
    from tests.e2e.conftest import ServerFactory
    from tools.spawn import ShardstatsServer

HOUR_MS = 3_600_000
CLIENTS = 32
READERS = 8  # concurrent clients of ``answers``
EXIT_LOCKED = 3
STOP_TIMEOUT = 25.0  # graceful_timeout_seconds (10) plus the shutdown itself, with margin
pytestmark = pytest.mark.e2e

# Users that only stay distinct if the server percent-decodes exactly and never normalises:
# "x y" / "x+y" / "x%20y" differ only in encoding, "é" / "e + combining acute" only in Unicode
# normal form.
SPECIAL_USERS = [
    "x y", "x+y", "x%20y", "a&b=c", "é", "e\u0301", "用户", "semi;colon", "slash/and?q=1",
    "#hash", "0", "00", "'quote\"", "no-break\u00a0space",
    "L" * 256,  # exactly max_user_bytes
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the workload -------------------------------------------------------------------------------


class Workload:
    """Random events over a fixed set of hours, heavy on hour boundaries and repeated users."""

    def __init__(self, rng: random.Random, hours: list[int], now: int, tag: str) -> None:
        self.rng = rng
        self.hours = hours
        self.now = now
        self.tag = tag
        # About half of the traffic to the first (the current) hour, the rest spread out.
        self.weights = [len(hours) - 1 or 1] + [1] * (len(hours) - 1)
        self.regulars = [f"regular-{i}" for i in range(60)] + SPECIAL_USERS
        self._fresh = itertools.count()

    def timestamp(self, hour: int) -> int:
        lo = hour * HOUR_MS
        hi = min(lo + HOUR_MS - 1, self.now)  # never in the future
        half = min(lo + HOUR_MS // 2, hi)  # where a +05:30 zone's local hour changes
        r = self.rng.random()
        if r < 0.1:
            return lo
        if r < 0.2:
            return hi
        if r < 0.25:
            return half
        if r < 0.3:
            return max(lo, half - 1)
        return self.rng.randint(lo, hi)

    def user(self) -> str:
        if self.rng.random() < 0.3:
            return f"fresh-{self.tag}-{next(self._fresh)}"
        return self.rng.choice(self.regulars)

    def event(self) -> Event:
        hour = self.rng.choices(self.hours, self.weights)[0]
        kind = "click" if self.rng.random() < 0.4 else "impression"
        return Event(self.timestamp(hour), self.user(), kind)


def recent_hours(now: int, back: list[int]) -> list[int]:
    """The current hour first, then ``now - k hours`` for each k (all inside 30 days)."""
    current = now // HOUR_MS
    return [current] + [current - k for k in back]


# -- HTTP helpers -------------------------------------------------------------------------------


def client_for(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(15.0),
        limits=httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS),
    )


async def post(client: httpx.AsyncClient, event: Event) -> httpx.Response:
    ts, user, kind = event
    return await client.post(
        "/analytics", params={"timestamp": str(ts), "user": user, "event": kind}
    )


async def get_counts(client: httpx.AsyncClient, timestamp: int) -> Counts:
    response = await client.get("/analytics", params={"timestamp": str(timestamp)})
    assert response.status_code == 200, (timestamp, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"unique_users", "clicks", "impressions"}, body
    return Counts.from_json(body)


async def answers(url: str, hours: Iterable[int]) -> dict[int, Counts]:
    """Every hour's counts; each hour asked at its first and last millisecond (must agree).

    ``READERS`` clients ask at once, each hour's two GETs one after the other: the server
    and this process then work side by side instead of taking turns (a few hundred cold
    hours took ~6 s one by one), and the answers must not depend on it.
    """
    todo = list(hours)
    found: dict[int, Counts] = {}
    failures: list[Exception] = []  # the first is raised as it is (callers catch it)

    async def reader(client: httpx.AsyncClient, mine: list[int],
                     scope: trio.CancelScope) -> None:
        try:
            for hour in mine:
                first = await get_counts(client, hour * HOUR_MS)
                last = await get_counts(client, hour * HOUR_MS + HOUR_MS - 1)
                assert first == last, f"hour {hour}: {first} at its start, {last} at its end"
                found[hour] = first
        except Exception as exc:
            failures.append(exc)
            scope.cancel()

    async with client_for(url) as client, trio.open_nursery() as nursery:
        for i in range(READERS):
            nursery.start_soon(reader, client, todo[i::READERS], nursery.cancel_scope)
    if failures:
        raise failures[0]
    return {hour: found[hour] for hour in todo}


def assert_exact(got: Mapping[int, Counts], ledger: Ledger) -> None:
    """Every event was acknowledged: the server must answer exactly the ledger's counts."""
    result = check(ledger, got)
    assert result.ok and result.exact, "\n".join(result.problems)


def assert_bounds(got: Mapping[int, Counts], ledger: Ledger, when: str = "") -> None:
    """acknowledged <= counted <= sent, hour by hour."""
    result = check(ledger, got)
    assert result.ok, when + "\n".join(result.problems)


def file_hours(directory: Path, suffix: str) -> set[int]:
    if not directory.exists():
        return set()
    return {int(p.name.removesuffix(suffix)) for p in directory.iterdir()
            if p.name.endswith(suffix) and not p.name.startswith(".")}


def journal_hours(data_dir: Path) -> set[int]:
    return file_hours(data_dir / "journals", ".sqlite")


def snapshot_hours(data_dir: Path) -> set[int]:
    return file_hours(data_dir / "snapshots", ".snap")


def delete_snapshots(data_dir: Path) -> set[int]:
    """Remove every file in the snapshots directory; return the hours whose snapshot it was."""
    hours = snapshot_hours(data_dir)
    for path in (data_dir / "snapshots").iterdir():
        path.unlink()  # a temporary file a SIGKILL left behind included
    return hours


def acknowledged_hours(ledger: Ledger) -> set[int]:
    return {hour for hour, entry in ledger.hours.items() if entry.acknowledged.events}


async def poll_until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = trio.current_time() + within
    while True:
        if condition():
            return
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await trio.sleep(0.02)


# -- load generators ----------------------------------------------------------------------------


async def post_all(url: str, workload: Workload, ledger: Ledger, per_client: int) -> None:
    """``CLIENTS`` concurrent clients, ``per_client`` POSTs each; every one must be a 204.

    Every eighth POST is followed by a GET of its hour, checked for read-your-writes: it must
    count at least every event acknowledged before it started, and at most everything sent.
    """
    problems: list[str] = []

    async def client_task(client: httpx.AsyncClient) -> None:
        for i in range(per_client):
            event = workload.event()
            ledger.record_sent(event)
            response = await post(client, event)
            ledger.statuses[response.status_code] += 1
            assert response.status_code == 204, (event, response.status_code, response.headers)
            # On a real socket: no body and nothing describing one.
            assert response.content == b""
            assert "content-type" not in response.headers, response.headers
            assert "content-length" not in response.headers, response.headers
            ledger.record_acked(event)
            if i % 8 == 0:
                entry = ledger.hours[event.hour]
                floor = entry.acknowledged.counts()
                got = await get_counts(client, event.timestamp)
                verdict = check_bounds(event.hour, floor, entry.sent.counts(), got)
                if not verdict.ok:
                    problems.append(f"read-your-writes: {verdict.as_dict()}")

    with trio.fail_after(90):
        async with client_for(url) as client, trio.open_nursery() as nursery:
            for _ in range(CLIENTS):
                nursery.start_soon(client_task, client)
    assert not problems, "\n".join(problems)


async def load_then_signal(
    server: ShardstatsServer,
    workload: Workload,
    ledger: Ledger,
    rng: random.Random,
    signum: int,
) -> int:
    """Post from ``CLIENTS`` clients until a random number of acks, then signal the server.

    Each client keeps posting until its connection fails (the server is gone), so requests
    are in flight when the signal lands. Returns the number of acks before the signal.
    The signal is sent from the task that received the threshold-crossing 204, with no task
    switch in between, so it lands as close to an acknowledgement as the client can get.
    """
    threshold = rng.randint(150, 700)
    reached = trio.Event()
    signalled = False
    acks = 0

    async def client_task(client: httpx.AsyncClient) -> None:
        nonlocal acks, signalled
        while True:
            event = workload.event()
            ledger.record_sent(event)  # before the first byte leaves: sent is an upper bound
            try:
                response = await post(client, event)
            except httpx.TransportError as exc:
                if signalled:
                    return  # the server is gone (or going): this one was sent, not acked
                raise AssertionError(f"connection failed before any signal: {exc!r}") from exc
            ledger.statuses[response.status_code] += 1
            if response.status_code == 204:
                ledger.record_acked(event)
                acks += 1
                if acks == threshold:
                    signalled = True
                    server.signal(signum)
                    reached.set()
            elif not (signalled and response.status_code == 503):  # 503 while stopping is fine
                raise AssertionError(
                    f"{response.status_code} for {event}: {response.headers} {response.text!r}"
                )

    with trio.fail_after(60):
        async with client_for(server.url) as client, trio.open_nursery() as nursery:
            for _ in range(CLIENTS):
                nursery.start_soon(client_task, client)
            await reached.wait()
    return threshold


async def kill_and_restart(
    factory: ServerFactory,
    data_dir: Path,
    env: Mapping[str, str],
    ledger: Ledger,
    cycles: int,
    load: Callable[[ShardstatsServer, str], Awaitable[object]],
) -> tuple[ShardstatsServer, dict[int, Counts]]:
    """``cycles`` times: start, check the bounds, ``load(server, tag)`` until it SIGKILLs the
    server. Then start once more and check the bounds; returns that server and its answers."""
    intervals = ["0.05", "30", "0.5"]  # snapshot often (snapshot + tail) or never (tail only)
    for cycle in range(cycles):
        server = await factory.astart(
            data_dir, {**env, "SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": intervals[cycle % 3]}
        )
        if cycle:  # recovered from the previous SIGKILL
            assert_bounds(await answers(server.url, ledger.hours), ledger, f"after kill {cycle}:\n")
        await load(server, f"c{cycle}")
        assert await server.await_exit(10) == -signal.SIGKILL
    server = await factory.astart(data_dir, env)
    got = await answers(server.url, ledger.hours)
    assert_bounds(got, ledger, f"after kill {cycles}:\n")
    return server, got


async def kill_cycles(
    factory: ServerFactory,
    data_dir: Path,
    env: Mapping[str, str],
    cycles: int,
    seed: int,
) -> tuple[Ledger, dict[int, Counts]]:
    """``cycles`` times: start, check the bounds, load, SIGKILL mid-load. Then a final check."""
    rng = random.Random(seed)
    now = now_ms()
    hours = recent_hours(now, [1, 2, 3, 5, 24, 24 * 7, 24 * 29])
    ledger = Ledger()

    async def load(server: ShardstatsServer, tag: str) -> None:
        workload = Workload(rng, hours, now, tag=tag)
        await load_then_signal(server, workload, ledger, rng, signal.SIGKILL)

    server, got = await kill_and_restart(factory, data_dir, env, ledger, cycles, load)
    # Journals exist exactly for UTC hours that were sent to, and for every acknowledged one.
    on_disk = journal_hours(data_dir)
    assert on_disk <= set(ledger.hours), sorted(on_disk - set(ledger.hours))
    assert acknowledged_hours(ledger) <= on_disk, sorted(acknowledged_hours(ledger) - on_disk)
    server.terminate()
    assert await server.await_exit(STOP_TIMEOUT) == 0, server.log()
    return ledger, got


# -- 1. concurrent POSTs, exact model ----------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="defaults"),
        # Far more hours than open shards and cached hours: eviction, reopening and idle
        # closing all happen under concurrent traffic.
        pytest.param(
            {
                "SHARDSTATS_MAX_OPEN_SHARDS": "2",
                "SHARDSTATS_MAX_CACHED_HOURS": "1",
                "SHARDSTATS_SHARD_IDLE_SECONDS": "0.2",
                "SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": "0.1",
            },
            id="tight-limits",
        ),
    ],
)
async def test_concurrent_posts_match_model_exactly(
    shardstats_server: ServerFactory, data_dir: Path, env: dict[str, str]
) -> None:
    rng = random.Random(1)
    now = now_ms()
    hours = recent_hours(now, [1, 2, 3, 4, 6, 24, 24 * 7, 24 * 29])
    ledger = Ledger()
    server = await shardstats_server.astart(data_dir, env)

    await post_all(server.url, Workload(rng, hours, now, "a"), ledger, per_client=40)

    assert ledger.statuses == {204: CLIENTS * 40}
    assert set(ledger.hours) == set(hours)
    assert_exact(await answers(server.url, hours), ledger)
    # One journal per written hour, and nothing else (GETs create no files).
    assert journal_hours(data_dir) == set(hours)
    # The neighbours of written hours are empty.
    neighbours = sorted({h + d for h in hours for d in (-1, 1)} - set(hours))
    assert all(c == ZERO for c in (await answers(server.url, neighbours)).values())


@pytest.mark.timeout(60)
async def test_more_hours_than_open_shards_never_stall(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    """Regression: openers waiting for a shard slot once waited on each other's hours.

    8 hours through a single open shard from 16 clients deadlocked within ~20 POSTs (every
    run) before the registry's openers waited for a slot change instead.
    """
    rng = random.Random(9)
    now = now_ms()
    hours = recent_hours(now, list(range(1, 8)))  # 8 hours through 1 open shard
    ledger = Ledger()
    server = await shardstats_server.astart(data_dir, {"SHARDSTATS_MAX_OPEN_SHARDS": "1"})
    workload = Workload(rng, hours, now, "s")
    stalled: list[Event] = []

    async def client_task(client: httpx.AsyncClient) -> None:
        for _ in range(40):
            event = workload.event()
            ledger.record_sent(event)
            with trio.move_on_after(5) as scope:
                response = await post(client, event)
            if scope.cancelled_caught:
                stalled.append(event)
                return
            assert response.status_code == 204, (event, response.status_code)
            ledger.record_acked(event)

    async with client_for(server.url) as client, trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(client_task, client)
    assert not stalled, f"{len(stalled)} POSTs got no answer within 5 s, e.g. {stalled[0]}"
    assert_exact(await answers(server.url, hours), ledger)


# -- 2. SIGKILL under load, three times on one data dir -----------------------------------------


@pytest.mark.timeout(120)
async def test_sigkill_under_load_keeps_acked_and_invents_nothing(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    ledger, _ = await kill_cycles(shardstats_server, data_dir, {}, cycles=3, seed=2)
    assert ledger.acknowledged >= 3 * 150


# -- 3. the same in non-UTC time zones -----------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Kolkata"])
async def test_sigkill_under_load_in_other_time_zone(
    shardstats_server: ServerFactory, data_dir: Path, zone: str
) -> None:
    ledger, got = await kill_cycles(shardstats_server, data_dir, {"TZ": zone}, cycles=2, seed=3)
    # The same data directory served from UTC answers identically, hour for hour.
    server = await shardstats_server.astart(data_dir, {"TZ": "UTC"})
    assert await answers(server.url, ledger.hours) == got


# -- 4. snapshots are only a cache ---------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_deleting_every_snapshot_gives_identical_answers(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    rng = random.Random(4)
    now = now_ms()
    hours = recent_hours(now, [1, 2, 5, 24, 24 * 20])
    ledger = Ledger()
    often = {"SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": "0.05"}
    never = {"SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": "3600"}

    # A: events, snapshots of every hour written while running, then SIGKILL.
    server = await shardstats_server.astart(data_dir, often)
    await post_all(server.url, Workload(rng, hours, now, "a"), ledger, per_client=10)
    await poll_until(lambda: snapshot_hours(data_dir) == set(hours), 10, "a snapshot per hour")
    expected = await answers(server.url, hours)
    assert_exact(expected, ledger)
    server.kill()

    # B: after a SIGKILL, without snapshots: rebuilt from the journals.
    assert delete_snapshots(data_dir) == set(hours)
    server = await shardstats_server.astart(data_dir, never)
    assert await answers(server.url, hours) == expected
    # More events that only the journals hold (no periodic snapshot), then SIGKILL.
    await post_all(server.url, Workload(rng, hours, now, "b"), ledger, per_client=10)
    expected = await answers(server.url, hours)
    assert_exact(expected, ledger)
    server.kill()

    # C: snapshot plus journal tail; then a graceful stop snapshots every hour.
    server = await shardstats_server.astart(data_dir, never)
    assert await answers(server.url, hours) == expected
    server.terminate()
    assert await server.await_exit(STOP_TIMEOUT) == 0, server.log()
    assert snapshot_hours(data_dir) == set(hours)

    # D: after a graceful stop, without snapshots.
    assert delete_snapshots(data_dir) == set(hours)
    server = await shardstats_server.astart(data_dir, never)
    assert await answers(server.url, hours) == expected
    server.kill()

    # E: and with a corrupt snapshot of every hour (it must be ignored, never trusted).
    for hour in hours:
        (data_dir / "snapshots" / f"{hour}.snap").write_bytes(b"SSSNAP01" + b"\xff" * 100)
    server = await shardstats_server.astart(data_dir, never)
    assert await answers(server.url, hours) == expected


# -- 5. graceful SIGTERM -------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_sigterm_under_load_exits_zero_with_snapshots_and_loses_nothing(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    rng = random.Random(5)
    now = now_ms()
    hours = recent_hours(now, [1, 3, 24, 24 * 10])
    ledger = Ledger()
    graceful = 10.0
    server = await shardstats_server.astart(
        data_dir, {"SHARDSTATS_GRACEFUL_TIMEOUT_SECONDS": str(graceful)}
    )

    acked = await load_then_signal(
        server, Workload(rng, hours, now, "t"), ledger, rng, signal.SIGTERM
    )
    assert acked > 0
    started = time.monotonic()
    assert await server.await_exit(STOP_TIMEOUT) == 0, server.log()
    elapsed = time.monotonic() - started

    # Every hour with a journal has a snapshot, and each snapshot covers the whole journal.
    assert journal_hours(data_dir) == snapshot_hours(data_dir) >= acknowledged_hours(ledger)
    snapshots = {
        hour: snapshot_codec.decode((data_dir / "snapshots" / f"{hour}.snap").read_bytes())
        for hour in snapshot_hours(data_dir)
    }
    # The lock is released: a new server takes the directory.
    server = await shardstats_server.astart(data_dir)
    got = await answers(server.url, ledger.hours)
    assert_bounds(got, ledger)
    for hour, snap in snapshots.items():
        assert snap.aggregate.counts().as_json() == got[hour].as_dict(), hour
    # The grace period bounds the stop. (It should not be waited out at all; about one run in
    # ten it is, through the hypercorn bug that test_sigterm_with_pipelined_request_exits_promptly
    # shows deterministically. Tighten this to graceful / 2 with that fix.)
    assert elapsed < graceful + 5, f"took {elapsed:.1f} s to stop under load"

    # An idle server stops promptly too.
    server.terminate()
    assert await server.await_exit(10) == 0, server.log()


@pytest.mark.timeout(60)
async def test_sigterm_with_idle_keep_alive_connection_exits_promptly(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    """Regression: after a request served by Quart (/healthz, /metrics, ...) the idle
    keep-alive connection was never closed, so SIGTERM waited out graceful_timeout_seconds.

    Quart-Trio cancels its request nursery on http.disconnect while hypercorn's
    end-of-response bookkeeping (recycle or close the connection) still runs in that task.
    """
    graceful = 5.0
    server = await shardstats_server.astart(
        data_dir, {"SHARDSTATS_GRACEFUL_TIMEOUT_SECONDS": str(graceful)}
    )
    ts = now_ms()
    async with client_for(server.url) as client:
        for i in range(3):
            assert (await post(client, Event(ts, f"keep-alive-{i}", "click"))).status_code == 204
        # A monitoring client's health check on the same pooled connection.
        assert (await client.get("/healthz")).status_code == 200
        # The connection is now idle: nothing is in flight.
        started = trio.current_time()
        server.terminate()
        code = await server.await_exit(graceful + 15)
        elapsed = trio.current_time() - started
    assert code == 0, server.log()
    assert elapsed < graceful / 2, (
        f"an idle server took {elapsed:.1f} s to stop (graceful_timeout_seconds={graceful})"
    )


async def read_response(stream: trio.SocketStream, buffer: bytearray) -> int:
    """Read one HTTP/1.1 response with a content-length (or none) from ``stream``."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return int(lines[0].split()[1])


async def read_until_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


@pytest.mark.timeout(60)
@pytest.mark.xfail(
    strict=True,
    reason=(
        "BUG (hypercorn 0.18 h11): a request that arrives behind one still being answered "
        "after SIGTERM leaves the connection reader waiting (h11 PAUSED) for a recycle that "
        "never comes; shutdown waits out graceful_timeout_seconds"
    ),
)
async def test_sigterm_with_pipelined_request_exits_promptly(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    """A request in flight at SIGTERM, with the client's next request right behind it.

    Under load this happens by chance (a keep-alive client sends its next request as soon as
    it has read the 204, before the server has finished its bookkeeping for the previous
    one): ``test_sigterm_under_load...`` then takes ~10 s about one run in ten. Here the first
    request is held open by a body that is sent in two parts, which makes it deterministic.
    """
    graceful = 4.0
    server = await shardstats_server.astart(
        data_dir, {"SHARDSTATS_GRACEFUL_TIMEOUT_SECONDS": str(graceful)}
    )
    assert server.port is not None
    ts = now_ms()
    get = f"GET /analytics?timestamp={ts} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    body = f'{{"timestamp": {ts}, "user": "pipelined", "event": "click"}}\n'.encode()
    batch_head = (
        f"POST /analytics/batch HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with trio.fail_after(graceful + 15):
        busy = await trio.open_tcp_stream("127.0.0.1", server.port)
        idle = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with busy, idle:
        await _sigterm_with_pipelined_request(server, busy, idle, get, batch_head, body, graceful)


async def _sigterm_with_pipelined_request(
    server: ShardstatsServer,
    busy: trio.SocketStream,
    idle: trio.SocketStream,
    get: bytes,
    batch_head: bytes,
    body: bytes,
    graceful: float,
) -> None:
    with trio.fail_after(graceful + 15):
        buffers = bytearray(), bytearray()
        for stream, buffer in zip((busy, idle), buffers, strict=True):
            await stream.send_all(get)  # both connections accepted and kept alive
            assert await read_response(stream, buffer) == 200
        await busy.send_all(batch_head + body[:10])  # the server now waits for the rest

        started = trio.current_time()
        server.terminate()
        # The idle keep-alive connection is closed once hypercorn has stopped serving.
        assert await read_until_eof(idle) == b""
        # The rest of the body, and the client's next request right behind it.
        await busy.send_all(body[10:] + get)
        assert await read_response(busy, buffers[0]) == 200  # the batch is answered
        await read_until_eof(busy)  # and the connection closed
        code = await server.await_exit(graceful + 10)
        elapsed = trio.current_time() - started
    assert code == 0, server.log()
    assert elapsed < graceful / 2, (
        f"took {elapsed:.1f} s to stop (graceful_timeout_seconds={graceful})"
    )


# -- 6. one server per data directory ------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_second_server_on_same_data_dir_is_refused(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    ts = now_ms()
    first = await shardstats_server.astart(data_dir)
    async with client_for(first.url) as client:
        assert (await post(client, Event(ts, "before", "click"))).status_code == 204

    second = shardstats_server.spawn(data_dir)
    assert await second.await_exit(20) == EXIT_LOCKED, second.log()
    message = second.log()
    assert "data directory" in message and str(data_dir) in message, message
    assert "listening on" not in message

    assert first.running()
    async with client_for(first.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await post(client, Event(ts, "after", "impression"))).status_code == 204
        assert await get_counts(client, ts) == Counts(unique_users=2, clicks=1, impressions=1)
    first.terminate()
    assert await first.await_exit(STOP_TIMEOUT) == 0, first.log()


# -- 7. hour boundaries --------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
async def test_boundary_timestamps_land_in_the_right_hour(
    shardstats_server: ServerFactory, data_dir: Path, zone: str
) -> None:
    k = now_ms() // HOUR_MS - 1  # so that (k + 1) * HOUR_MS is not in the future
    events: list[Event] = [
        Event(k * HOUR_MS - 1, "prev", "click"),  # last millisecond of hour k - 1
        Event(k * HOUR_MS, "first", "click"),  # first millisecond of hour k
        Event(k * HOUR_MS, "first", "impression"),
        Event((k + 1) * HOUR_MS - 1, "last", "impression"),  # last millisecond of hour k
        Event((k + 1) * HOUR_MS, "next", "click"),  # first millisecond of hour k + 1
        Event((k + 1) * HOUR_MS, "next", "click"),
        Event((k + 1) * HOUR_MS, "next", "click"),
    ]
    server = await shardstats_server.astart(data_dir, {"TZ": zone})
    async with client_for(server.url) as client:
        for event in events:
            response = await post(client, event)
            assert response.status_code == 204, (event, response.headers)
        expected = {
            k - 2: ZERO,
            k - 1: Counts(unique_users=1, clicks=1, impressions=0),
            k: Counts(unique_users=2, clicks=1, impressions=2),
            k + 1: Counts(unique_users=1, clicks=3, impressions=0),
            k + 2: ZERO,
        }
        for hour, counts in expected.items():
            for ts in (hour * HOUR_MS, hour * HOUR_MS + HOUR_MS // 2, (hour + 1) * HOUR_MS - 1):
                assert await get_counts(client, ts) == counts, (hour, ts - hour * HOUR_MS)
    assert journal_hours(data_dir) == {k - 1, k, k + 1}


# -- 8. queries never create files ---------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_get_of_unwritten_hour_is_zero_and_creates_nothing(
    shardstats_server: ServerFactory, data_dir: Path
) -> None:
    ts = now_ms()
    server = await shardstats_server.astart(data_dir)
    async with client_for(server.url) as client:
        assert (await post(client, Event(ts, "someone", "click"))).status_code == 204
    before = sorted(p.relative_to(data_dir) for p in (data_dir / "journals").iterdir())
    written = ts // HOUR_MS
    unwritten = [0, 1, HOUR_MS, ts - HOUR_MS, ts - 24 * HOUR_MS, ts - 40 * 24 * HOUR_MS,
                 ts + HOUR_MS, ts + 1000 * HOUR_MS, 2**63 - 1]
    async with client_for(server.url) as client:
        for timestamp in unwritten:
            assert timestamp // HOUR_MS != written
            assert await get_counts(client, timestamp) == ZERO, timestamp
    after = sorted(p.relative_to(data_dir) for p in (data_dir / "journals").iterdir())
    assert after == before
    server.terminate()
    assert await server.await_exit(STOP_TIMEOUT) == 0, server.log()
    assert journal_hours(data_dir) == {written}
    assert snapshot_hours(data_dir) == {written}

    # Nor after a restart.
    server = await shardstats_server.astart(data_dir)
    async with client_for(server.url) as client:
        for timestamp in unwritten:
            assert await get_counts(client, timestamp) == ZERO, timestamp
        assert await get_counts(client, ts) == Counts(unique_users=1, clicks=1, impressions=0)
    assert journal_hours(data_dir) == {written}

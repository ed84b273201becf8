"""GET /metrics: Prometheus text with the counters, histograms and gauges the issue names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from shardstats.cluster.memory import InMemoryLog
from shardstats.config import Settings
from tests.http.apps import ready_client
from tests.http.conftest import raw_asgi, running_app
from tests.http.test_cluster_http import cluster_service

NOW = 1_780_000_000_000


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_follow_traffic(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with ready_client(settings, NOW) as client:
        for user in ("a", "b", "c"):
            await client.post(f"/analytics?timestamp={NOW}&user={user}&event=click")
        await client.post("/analytics?timestamp=soon&user=a&event=click")
        await client.post(f"/analytics?timestamp={NOW}&user=a&event=tap")
        await client.post(
            "/analytics/batch",
            data=f'{{"timestamp": {NOW}, "user": "d", "event": "impression"}}\nnope',
        )
        await client.get(f"/analytics?timestamp={NOW}")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        got = samples(await response.get_data(as_text=True))
    assert got[("shardstats_events_accepted_total", ())] == 4
    rejected = {labels: value for (name, labels), value in got.items()
                if name == "shardstats_events_rejected_total"}
    assert rejected == {
        (("field", "timestamp"), ("reason", "malformed")): 1,
        (("field", "event"), ("reason", "unknown_value")): 1,
        (("field", "line"), ("reason", "malformed")): 1,
    }
    assert got[("shardstats_commit_batch_events_sum", ())] == 4
    assert got[("shardstats_commit_seconds_count", ())] >= 1
    assert got[("shardstats_open_shards", ())] == 1
    assert got[("shardstats_queued_requests", ())] == 0
    assert got[("shardstats_ready", ())] == 1
    assert got[("shardstats_unsaved_hour_aggregates", ())] == 0
    key = (
        "shardstats_request_seconds_count",
        (("method", "POST"), ("route", "/analytics"), ("status", "204")),
    )
    assert got[key] == 3


def hostile_round(i: int) -> list[tuple[str, str, bytes]]:
    """Requests whose method, path and query a client invents; ``i`` makes each round new."""
    junk = f"INVENTED{i}" + "X" * 200
    ts = f"timestamp={NOW}"
    return [
        (junk, f"/nowhere/{i}", b""),
        (junk, "/analytics", ts.encode()),
        (junk, "/metrics", b""),
        (junk, "/analytics/batch", b""),
        (junk.lower(), "/healthz", b""),
        ("GET", f"/nowhere/{i}/{junk}", b""),
        ("POST", f"/analytics/{junk}", b""),
        ("DELETE", "/analytics", ts.encode()),
        ("GET", "/analytics", f"timestamp={junk}".encode()),
        ("POST", "/analytics", f"{ts}&user=u{i}&event={junk}".encode()),
        ("POST", "/analytics", f"{ts}&user=u{i}&event=click&{junk}=1&{junk}=2".encode()),
        ("POST", "/analytics", f"timestamp={i}&user=u{i}&event=click".encode()),
        ("GET", "/analytics/range", f"from={junk}&to=1".encode()),
    ]


async def test_metrics_do_not_grow_with_what_clients_invent(tmp_path: Path) -> None:
    """Every label comes from a fixed set: however many methods, paths and bad queries
    clients invent, a scrape has the same series after the first round as after the last."""
    async with running_app(tmp_path / "data", now_ms=NOW) as harness:
        app = harness.app

        async def scrape() -> list[str]:
            response = await raw_asgi(app, "GET", "/metrics", b"")
            assert response.status_code == 200
            return [line.rpartition(" ")[0] for line in response.body.decode().splitlines()
                    if not line.startswith("#")]

        async def hostile(first: int, last: int) -> None:
            for i in range(first, last):
                for method, path, query in hostile_round(i):
                    response = await raw_asgi(app, method, path, query)
                    assert response.status_code < 500, (method[:20], path[:40])

        await hostile(0, 1)
        await scrape()  # the scrape's own series now exist too
        before = await scrape()
        await hostile(1, 150)
        after = await scrape()
    assert after == before
    assert len("\n".join(after)) < 50_000


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install "
                    "prometheus; .ci/run installs it)")
@pytest.mark.parametrize("mode", ["embedded", "cluster"])
async def test_metrics_pass_the_prometheus_linter(tmp_path: Path, mode: str) -> None:
    """``promtool check metrics`` on a real scrape, after traffic that creates every kind of
    series (latencies of each front, rejections, commits, cluster gauges)."""
    factory = cluster_service(InMemoryLog()) if mode == "cluster" else None
    async with running_app(tmp_path / "data", now_ms=NOW, service_factory=factory,
                           node_name="n1") as h:
        await h.event(NOW, "alice")
        await h.post("timestamp=x&user=a&event=click")
        await h.get(f"timestamp={NOW}")
        await h.request("PUT", "")
        await h.request("POST", "", "/analytics/batch", body=b'{"timestamp": 1}\nnope')
        await h.request("GET", f"from={NOW}&to={NOW}", "/analytics/range")
        scrape = (await h.client.get("/metrics")).body
    assert b"shardstats_events_rejected_total" in scrape
    assert (mode == "cluster") == (b"shardstats_log_applied_seq" in scrape)
    assert PROMTOOL is not None
    with trio.fail_after(60):
        result = await trio.run_process([PROMTOOL, "check", "metrics"], stdin=scrape,
                                        capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


async def test_metrics_show_aggregates_waiting_for_their_snapshot(tmp_path: Path) -> None:
    """A closed hour's aggregate waits in memory for the background snapshot writer (at most
    max_open_shards of them): an operator sees how many, and how many snapshots were written."""
    settings = Settings(data_dir=str(tmp_path), max_open_shards=1)
    async with ready_client(settings, NOW) as client:
        await client.post(f"/analytics?timestamp={NOW}&user=a&event=click")
        await client.post(f"/analytics?timestamp={NOW - 3_600_000}&user=a&event=click")
        for _ in range(200):  # the evicted hour closes in the background
            got = samples(await (await client.get("/metrics")).get_data(as_text=True))
            if got[("shardstats_unsaved_hour_aggregates", ())]:
                break
            await trio.sleep(0.005)
    assert got[("shardstats_open_shards", ())] == 1
    assert got[("shardstats_unsaved_hour_aggregates", ())] == 1  # the hour closed for room
    assert got[("shardstats_snapshots_written_total", ())] == 0

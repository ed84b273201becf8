"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Counters and histograms are fed by the HTTP layer and by the actors through the
``Observer`` hooks; gauges (open shards, cached hours, queue depth, ...) are read from the
service's ``statistics()`` at scrape time, so the hot path never updates them. Each app has
its own ``CollectorRegistry`` (no process globals), so tests can run several apps.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shardstats.cluster.node import ClusterStatistics
from shardstats.errors import Problem
from shardstats.shards.observer import Observer
from shardstats.shards.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Labels must come from fixed sets: hypercorn accepts any token as a method, and a label per
# invented method (1,000 of 8 KB each) once made a scrape 134 MB and never gave the memory back.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT",
                      "TRACE"})


def method_label(method: str) -> str:
    """The method as a label: one of the standard methods, or ``other``."""
    return method if method in _METHODS else "other"


class Metrics(Observer):
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("shardstats_events_accepted", "Events made durable", registry=r)
        # field and reason: an InvalidInput's Problem, both from fixed enums.
        self.rejected = Counter(
            "shardstats_events_rejected", "Events refused as invalid", ["field", "reason"],
            registry=r,
        )
        self.failed = Counter(
            "shardstats_events_failed", "Events whose commit failed (answered 500)", registry=r
        )
        self.batch_size = Histogram(
            "shardstats_commit_batch_events", "Events per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "shardstats_commit_seconds", "Group commit latency (dictionary + journal + fsync)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.snapshot_seconds = Histogram(
            "shardstats_snapshot_seconds", "Snapshot write latency", registry=r
        )
        self.snapshot_failures = Counter(
            "shardstats_snapshot_failures", "Snapshot writes that failed", registry=r
        )
        self.load_seconds = Histogram(
            "shardstats_hour_load_seconds", "Loading a past hour (snapshot + journal tail)",
            registry=r,
        )
        # route: a rule the app declares or "unmatched"; method: ``method_label``; status: a
        # code the app chose. None of them is text a client wrote.
        self.request_seconds = Histogram(
            "shardstats_request_seconds", "HTTP request latency in the app",
            ["route", "method", "status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )
        r.register(_ServiceCollector(service))

    def reject(self, problem: Problem, events: int = 1) -> None:
        self.rejected.labels(problem.field.value, problem.reason.value).inc(events)

    def commit(self, events: int, seconds: float, ok: bool) -> None:
        self.batch_size.observe(events)
        self.commit_seconds.observe(seconds)
        if not ok:
            self.failed.inc(events)

    def snapshot(self, seconds: float, ok: bool) -> None:
        self.snapshot_seconds.observe(seconds)
        if not ok:
            self.snapshot_failures.inc()

    def load(self, seconds: float, replayed: int) -> None:
        self.load_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector(Collector):
    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        stats = self._service.statistics()
        reg, dic = stats.registry, stats.dictionary
        yield GaugeMetricFamily("shardstats_ready", "1 once recovery is done", stats.ready)
        yield GaugeMetricFamily("shardstats_open_shards", "Hours with a running shard",
                                reg.open_shards)
        # Counts of hours, not durations: no "_hours" in a name, which reads as a unit
        # (`promtool check metrics`).
        yield GaugeMetricFamily("shardstats_cached_hour_aggregates",
                                "Closed hours whose aggregate is held in memory",
                                reg.cached_hours)
        yield GaugeMetricFamily("shardstats_hour_journals", "Hours with a journal on disk",
                                reg.known_hours)
        yield GaugeMetricFamily(
            "shardstats_unsaved_hour_aggregates",
            "Closed hours whose aggregate waits in memory for its snapshot (at most "
            "max_open_shards; opens wait when full)", reg.unsaved)
        yield CounterMetricFamily("shardstats_snapshots_written",
                                  "Hour snapshots written by the background writer",
                                  reg.snapshots)
        yield GaugeMetricFamily("shardstats_queued_requests", "Requests waiting in shard inboxes",
                                reg.queued)
        yield GaugeMetricFamily("shardstats_cached_users", "User ids in the lookup cache",
                                dic.cached_users)
        yield GaugeMetricFamily(
            "shardstats_recovery_seconds", "Time from start to ready",
            stats.recovery_seconds if stats.recovery_seconds is not None else float("nan"),
        )
        cluster = self._service.cluster
        if cluster is not None:
            yield from _cluster_families(cluster.statistics())


def _cluster_families(stats: ClusterStatistics | None) -> Iterator[Metric]:
    """Cluster mode only (``node``/``log`` gauges): how far this node is behind the log."""
    if stats is None:
        return
    m, p = stats.materializer, stats.publisher
    for name, doc, value in (
        ("log_connected", "1 while the NATS connection is up", stats.log.connected),
        ("log_applied_seq", "Every log record up to this seq is in this node's hours",
         m.applied_seq),
        ("log_last_seq", "The log's last seq as last seen", m.log_last_seq),
        ("log_lag_records", "Log records not applied yet", m.lag_records),
        ("log_lag_seconds", "Age of the oldest log record not applied yet", m.lag_seconds),
        ("log_caught_up", "1 once the node applied the log as far as it was at start",
         m.caught_up),
        ("log_records_applied_total", "Log records applied since start", m.records),
        ("log_invalid_records_total", "Log records skipped as undecodable", m.invalid_records),
        ("log_passes_total", "Passes over the log (restarts after failures + 1)", m.passes),
        ("publish_queued_requests", "Requests waiting for the publisher", p.queued),
        ("publish_in_flight_records", "Records sent, PubAck pending", p.in_flight),
        ("publish_records_total", "Records acknowledged by the log", p.records),
        ("publish_failed_records_total", "Records the log did not acknowledge",
         p.failed_records),
        ("publish_unknown_outcomes_total", "Publishes without an answer in time",
         p.unknown_outcomes),
        ("read_barrier_calls_total", "Log last-seq calls made for GETs", stats.barrier_calls),
        ("read_barrier_stale_total", "GETs answered stale (log unreachable)",
         stats.barrier_stale),
        ("read_barrier_behind_total", "GETs answered 503: node behind past the bound",
         stats.barrier_behind),
    ):
        if name.endswith("_total"):
            yield CounterMetricFamily(f"shardstats_{name}", doc, float(value))
        else:
            yield GaugeMetricFamily(f"shardstats_{name}", doc, float(value))

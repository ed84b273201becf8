"""Text rendering of load reports (pure)."""

from __future__ import annotations

from tools.loadgen.ledger import CheckResult
from tools.loadgen.runner import BatchReport, FillReport, LoadReport
from tools.loadgen.stats import ClassSummary


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def class_row(name: str, s: ClassSummary) -> str:
    return (f"{name:<16}{s.requests:>9}{s.errors:>8}{s.rate:>10.1f}"
            f"{ms(s.p50_ms):>9}{ms(s.p90_ms):>9}{ms(s.p99_ms):>9}{ms(s.max_ms):>9}")


HEADER = (f"{'class':<16}{'requests':>9}{'errors':>8}{'rate/s':>10}"
          f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")


def latency(s: ClassSummary) -> str:
    return f"p50 {ms(s.p50_ms)} ms, p99 {ms(s.p99_ms)} ms, max {ms(s.max_ms)} ms"


def format_check(result: CheckResult | None) -> list[str]:
    if result is None:
        return ["read-back: skipped"]
    if result.ok:
        how = "exact" if result.exact else "within bounds (some events unacknowledged)"
        return [f"read-back: OK, {how}: {len(result.hours)} hours, "
                f"{result.acknowledged} acknowledged and {result.unacknowledged} "
                "unacknowledged events"]
    if result.unreadable and all(h.ok for h in result.hours):
        lines = ["read-back: INCOMPLETE — some hours could not be read back:"]
    else:
        lines = ["read-back: FAILED — the server's counts do not match what it acknowledged:"]
    problems = result.problems
    lines += [f"  {p}" for p in problems[:20]]
    if len(problems) > 20:
        lines.append(f"  ... and {len(problems) - 20} more")
    return lines


def _table(report: LoadReport, total: bool) -> list[str]:
    lines = [f"{report.url}: {report.description}", HEADER]
    lines += [class_row(cls.value, s) for cls, s in report.classes.items() if s.requests]
    return lines + ([class_row("all", report.total)] if total else [])


def _closing(examples: list[str], check: CheckResult | None) -> list[str]:
    return [f"  error: {example}" for example in examples] + format_check(check)


def format_load(report: LoadReport) -> str:
    lines = _table(report, total=True)
    b = report.baseline_reads
    if b is not None and b.requests:
        lines.append(f"baseline reads before the load (first read of each hour: cold): "
                     f"{b.requests}, {latency(b)}")
    client = (f"load generator: {report.client_cpu:.0%} of one core, "
              f"{report.connections_opened} connections")
    if report.lag_p99_ms is not None:
        client += (f", dispatch lag p99 {ms(report.lag_p99_ms)} ms "
                   f"(max {ms(report.lag_max_ms)} ms)")
    lines.append(client)
    return "\n".join(lines + _closing(report.error_examples, report.check))


def format_fill(report: FillReport) -> str:
    hours, t = report.hours, report.tally
    if not hours:
        span = "none"
    elif len(hours) == 1:
        span = f"hour {hours[0]}"
    else:
        span = f"hours {hours[0]}..{hours[-1]}"
    if report.method == "batch":
        how = (f"POST /analytics/batch, {report.chunk_events:,} events per request, "
               f"{report.connections} connections, {t.requests:,} requests")
    else:
        how = f"single POSTs, {report.connections} connections"
    lines = [
        f"{report.url}: pre-populated {len(hours)} hour{'s' if len(hours) != 1 else ''} "
        f"({span}) by {how}: {t.sent:,} events in "
        f"{report.seconds:.1f} s = {report.rate:,.0f} events/s, "
        f"{t.accepted:,} acknowledged, {t.rejected:,} rejected, "
        f"{t.retried_503} retries after 503, {t.split} splits after 413, "
        f"errors {t.errors or 0}; "
        f"load generator {report.client_cpu:.0%} of one core",
    ]
    lat = report.request_latency
    if lat is not None and lat.ok:
        lines.append(f"  request latency: {latency(lat)}")
    return "\n".join(lines + _closing(report.error_examples, report.check))


def format_batch(report: BatchReport) -> str:
    load, t = report.load, report.tally
    lines = _table(load, total=False)
    lines.append(
        f"durable events: {report.event_rate:,.0f}/s in the measured window "
        f"({t.accepted_in_window:,} acknowledged in {load.window_s:.1f} s); overall "
        f"{t.sent:,} sent, {t.accepted:,} acknowledged, {t.rejected:,} rejected, "
        f"{t.unacknowledged:,} unacknowledged, {t.retried_503} retries after 503")
    lines.append(
        f"users: pool of {report.pool:,}; {report.distinct_in_window:,} distinct users in the "
        f"window's {report.events_in_window:,} events, {report.new_in_window:,} of them new "
        f"(not sent before the window)")
    lines.append(f"load generator: {load.client_cpu:.0%} of one core, "
                 f"{load.connections_opened} connections")
    return "\n".join(lines + _closing(load.error_examples, load.check))

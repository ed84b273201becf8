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


def format_load(report: LoadReport) -> str:
    lines = [f"{report.url}: {report.description}", HEADER]
    for cls, summary in report.classes.items():
        if summary.requests:
            lines.append(class_row(cls.value, summary))
    lines.append(class_row("all", report.total))
    if report.baseline_reads is not None and report.baseline_reads.requests:
        b = report.baseline_reads
        lines.append(f"baseline reads before the load (first read of each hour: cold): "
                     f"{b.requests}, p50 {ms(b.p50_ms)} ms, p99 {ms(b.p99_ms)} ms, "
                     f"max {ms(b.max_ms)} ms")
    client = (f"load generator: {report.client_cpu:.0%} of one core, "
              f"{report.connections_opened} connections")
    if report.lag_p99_ms is not None:
        client += (f", dispatch lag p99 {ms(report.lag_p99_ms)} ms "
                   f"(max {ms(report.lag_max_ms)} ms)")
    lines.append(client)
    for example in report.error_examples:
        lines.append(f"  error: {example}")
    lines += format_check(report.check)
    return "\n".join(lines)


def format_fill(report: FillReport) -> str:
    hours = report.hours
    if not hours:
        span = "none"
    elif len(hours) == 1:
        span = f"hour {hours[0]}"
    else:
        span = f"hours {hours[0]}..{hours[-1]}"
    if report.method == "batch":
        how = (f"POST /analytics/batch, {report.chunk_events:,} events per request, "
               f"{report.connections} connections, {report.requests:,} requests")
    else:
        how = f"single POSTs, {report.connections} connections"
    lines = [
        f"{report.url}: pre-populated {len(hours)} hour{'s' if len(hours) != 1 else ''} "
        f"({span}) by {how}: {report.sent:,} events in "
        f"{report.seconds:.1f} s = {report.rate:,.0f} events/s, "
        f"{report.acknowledged:,} acknowledged, {report.rejected:,} rejected, "
        f"{report.retried_503} retries after 503, {report.split_413} splits after 413, "
        f"errors {report.errors or 0}; "
        f"load generator {report.client_cpu:.0%} of one core",
    ]
    lat = report.request_latency
    if lat is not None and lat.ok:
        lines.append(f"  request latency: p50 {ms(lat.p50_ms)} ms, p99 {ms(lat.p99_ms)} ms, "
                     f"max {ms(lat.max_ms)} ms")
    for example in report.error_examples:
        lines.append(f"  error: {example}")
    lines += format_check(report.check)
    return "\n".join(lines)


def format_batch(report: BatchReport) -> str:
    load, t = report.load, report.tally
    lines = [f"{report.load.url}: {load.description}", HEADER]
    for cls, summary in load.classes.items():
        if summary.requests:
            lines.append(class_row(cls.value, summary))
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
    for example in load.error_examples:
        lines.append(f"  error: {example}")
    lines += format_check(load.check)
    return "\n".join(lines)

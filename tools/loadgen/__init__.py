"""Load generator for shardstats: realistic traffic, honest latencies, read-back.

Run ``python -m tools.loadgen --help``. Layout: ``workload`` (traffic model), ``stats``
(percentiles, rates), ``ledger`` (read-back check), ``batch`` (batch bodies, chunks and
verdicts) and ``ranges`` (range answers and their exact expectation) are pure; ``client``
(HTTP/1.1 through h11 on trio sockets) and ``runner`` (open/closed loop, batch loop, range
loop, pre-population) do the I/O; ``cli`` is the command line.
"""

from tools.loadgen.ledger import CheckResult, Counts, Ledger, check
from tools.loadgen.runner import BatchReport, FillReport, LoadReport, LoadSession, fill_plans
from tools.loadgen.workload import FillPlan, RequestClass, Workload, WorkloadConfig

__all__ = [
    "BatchReport",
    "CheckResult",
    "Counts",
    "FillPlan",
    "FillReport",
    "Ledger",
    "LoadReport",
    "LoadSession",
    "RequestClass",
    "Workload",
    "WorkloadConfig",
    "check",
    "fill_plans",
]

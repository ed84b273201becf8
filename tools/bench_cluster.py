"""Pieces of ``tools/bench.py``'s cluster scenario: CPU time of a process from /proc, and a
load session that spreads its connections over several nodes. (Its nats-server is a
``tools.spawn.NatsServer`` with JetStream's defaults: file storage, fsync every
``sync_interval`` = 2 minutes.)
"""

from __future__ import annotations

import os
from typing import Any

from tools.loadgen.client import Connection, Endpoint
from tools.loadgen.runner import LoadSession

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                out += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return out


def process_cpu(pid: int) -> float:
    """utime + stime (every thread) of ``pid`` and of its live descendants, in seconds,
    from /proc/PID/stat; 0 for a process that is gone."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat", encoding="ascii") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "(comm)": field 3 is fields[0]
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15
        todo += _children(current)
    return total


class SplitSession(LoadSession):
    """A ``LoadSession`` whose connections go to several nodes in turn (one ledger, one
    read-back check); ``pin`` sends every new connection to one node (read back per node)."""

    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        super().__init__(urls[0], **kwargs)
        self.endpoints = [Endpoint.parse(url) for url in urls]
        self.pin: int | None = None
        self._turn = 0

    def _connection(self) -> Connection:
        self.connections_opened += 1
        if self.pin is not None:
            return Connection(self.endpoints[self.pin])
        endpoint = self.endpoints[self._turn % len(self.endpoints)]
        self._turn += 1
        return Connection(endpoint)

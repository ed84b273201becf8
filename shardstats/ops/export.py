"""``shardstats export``: hour aggregates as CSV or JSON lines, optionally with bitmaps.

With ``bitmaps_dir``, each hour's users are written as ``<hour>.roaring`` in the portable
Roaring serialization (readable by CRoaring, Java and Go RoaringBitmap, pyroaring) and the
id -> user mapping of every exported id as ``users.csv``, so the sets can be merged
elsewhere. Read-only: aggregates come from a trusted snapshot plus the journal tail.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pyroaring import BitMap

from shardstats.core.aggregate import HourAggregate
from shardstats.ops.common import hour_iso
from shardstats.shards import loader
from shardstats.storage.datadir import DataDir

FIELDS = ("hour", "hour_start", "unique_users", "clicks", "impressions")


@dataclass
class ExportRow:
    hour: int
    aggregate: HourAggregate

    def record(self) -> dict[str, object]:
        counts = self.aggregate.counts()
        return {
            "hour": self.hour,
            "hour_start": hour_iso(self.hour),
            "unique_users": counts.unique_users,
            "clicks": counts.clicks,
            "impressions": counts.impressions,
        }


def load_readonly(datadir: DataDir, hour: int) -> HourAggregate:
    with datadir.open_journal(hour, create=False, readonly=True) as journal:
        return loader.load(datadir, hour, journal, None).aggregate


def export(
    datadir: DataDir,
    hours: Iterable[int],
    out: TextIO,
    fmt: str = "csv",
    bitmaps_dir: Path | None = None,
    progress: Callable[[Iterable[int]], Iterable[int]] = lambda it: it,
) -> int:
    """Write one record per hour to ``out``; return the number of hours exported."""
    writer = csv.DictWriter(out, FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    every_user = BitMap()
    count = 0
    for hour in progress(list(hours)):
        row = ExportRow(hour, load_readonly(datadir, hour))
        if writer is not None:
            writer.writerow(row.record())
        else:
            out.write(json.dumps(row.record()) + "\n")
        if bitmaps_dir is not None:
            bitmaps_dir.mkdir(parents=True, exist_ok=True)
            (bitmaps_dir / f"{hour}.roaring").write_bytes(row.aggregate.users.serialize())
            every_user |= row.aggregate.users
        count += 1
    if bitmaps_dir is not None:
        _write_users(datadir, every_user, bitmaps_dir / "users.csv")
    return count


def _write_users(datadir: DataDir, ids: BitMap, path: Path) -> None:
    with (datadir.open_users(readonly=True) as store,
          path.open("w", newline="", encoding="utf-8") as handle):
        writer = csv.writer(handle)
        writer.writerow(["id", "user"])
        writer.writerows(store.names(ids))

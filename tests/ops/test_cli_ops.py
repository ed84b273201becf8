"""The operator commands, driven through their CLI as an operator would."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroaring import BitMap

from shardstats.cli import build_parser, main
from shardstats.core.events import HOUR_MS, EventColumns
from shardstats.ops.export import load_readonly
from shardstats.storage.datadir import DataDir
from tests.journals import BLANK_KINDS, write_blank_journal

BASE_HOUR = 493_000  # 2026-03-29, long closed: compact treats every hour as closed
ROOT = Path(__file__).resolve().parents[2]


Model = dict[int, tuple[set[str], int, int]]  # hour -> (users, clicks, impressions)


def populate(root: Path, hours: int, events_per_hour: int, seed: int = 7) -> Model:
    """Fill a data dir through the storage layer, as the shards do; return the model."""
    rng = random.Random(seed)
    datadir = DataDir(root)
    datadir.prepare()
    model: Model = {}
    with datadir.open_users() as users:
        for hour in range(BASE_HOUR, BASE_HOUR + hours):
            pool = events_per_hour // 2 + 1
            names = [f"user-{rng.randrange(pool)}" for _ in range(events_per_hour)]
            kinds = [rng.choice([1, 2]) for _ in names]
            ids = users.assign(names)
            with datadir.open_journal(hour, create=True) as journal:
                for start in range(0, len(names), 500):
                    chunk = range(start, min(start + 500, len(names)))
                    journal.append(EventColumns([hour * HOUR_MS + i for i in chunk],
                                                [names[i] for i in chunk],
                                                [kinds[i] for i in chunk]),
                                   [ids[names[i]] for i in chunk])
            model[hour] = (set(names), kinds.count(1), kinds.count(2))
    return model


def answers(root: Path) -> dict[int, tuple[int, int, int]]:
    datadir = DataDir(root)
    result = {}
    for hour in sorted(datadir.journal_hours()):
        counts = load_readonly(datadir, hour).counts()
        result[hour] = (counts.unique_users, counts.clicks, counts.impressions)
    return result


def run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "shardstats", *args], capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_verify_green_then_compact_shrinks_and_keeps_answers(tmp_path: Path) -> None:
    model = populate(tmp_path, hours=3, events_per_hour=600)
    expected = {h: (len(u), c, i) for h, (u, c, i) in model.items()}
    assert answers(tmp_path) == expected

    code, out, _ = run("verify", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert "2026-03-29T" in out and "3 hours, 1800 events, 0 failed" in out

    code, out, _ = run("compact", "--data-dir", str(tmp_path))
    assert code == 0, out
    total = out.strip().splitlines()[-1]
    before, after = (int(x) for x in total.split(", ")[1].split(" bytes")[0].split(" -> "))
    assert after < before
    assert answers(tmp_path) == expected
    assert run("verify", "--data-dir", str(tmp_path))[0] == 0
    # A second run finds nothing to do and changes nothing.
    code, out, _ = run("compact", "--data-dir", str(tmp_path))
    assert code == 0 and out.count("already compact") == 3


def test_verify_json_and_hour_selection(tmp_path: Path) -> None:
    populate(tmp_path, hours=3, events_per_hour=50)
    code, out, _ = run("verify", "--data-dir", str(tmp_path), "--hour", str(BASE_HOUR + 1),
                       "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [h["hour"] for h in report["hours"]] == [BASE_HOUR + 1]
    iso_hour = report["hours"][0]["iso"]
    code, out, _ = run("verify", "--data-dir", str(tmp_path), "--hour", iso_hour, "--json")
    assert [h["hour"] for h in json.loads(out)["hours"]] == [BASE_HOUR + 1]


def damage_page(path: Path) -> None:
    """Overwrite the cell-content end of the blocks table's root page."""
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'blocks'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    end = root * page_size
    data[end - 600 : end] = os.urandom(600)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["journal-page", "journal-not-sqlite", "snapshot-truncated",
                                    "snapshot-bitflip"])
def test_verify_names_the_hour_and_problem(tmp_path: Path, damage: str) -> None:
    populate(tmp_path, hours=2, events_per_hour=600)
    assert run("compact", "--data-dir", str(tmp_path))[0] == 0  # writes snapshots
    datadir = DataDir(tmp_path)
    hour = BASE_HOUR + 1
    if damage == "journal-page":
        damage_page(datadir.journal_path(hour))
    elif damage == "journal-not-sqlite":
        datadir.journal_path(hour).write_bytes(b"this is not a database" * 100)
    elif damage == "snapshot-truncated":
        snap = datadir.snapshot_path(hour)
        snap.write_bytes(snap.read_bytes()[:40])
    else:
        snap = datadir.snapshot_path(hour)
        data = bytearray(snap.read_bytes())
        data[len(data) // 2] ^= 0x04
        snap.write_bytes(bytes(data))
    code, out, _ = run("verify", "--data-dir", str(tmp_path))
    assert code == 1, out
    bad = [line for line in out.splitlines() if "FAIL" in line and line.startswith("2026")]
    assert len(bad) == 1, out
    from shardstats.ops.common import hour_iso

    assert bad[0].startswith(hour_iso(hour))
    assert ("snapshot corrupt" if damage.startswith("snapshot") else "journal") in bad[0]
    assert "verification FAILED" in out


def test_compact_killed_at_random_moments_then_rerun(tmp_path: Path) -> None:
    populate(tmp_path, hours=12, events_per_hour=3000)
    expected = answers(tmp_path)
    rng = random.Random(3)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "shardstats", "compact", "--data-dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert answers(tmp_path) == expected
    code, out, _ = run("compact", "--data-dir", str(tmp_path))
    assert code == 0, out
    code, out, _ = run("verify", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert answers(tmp_path) == expected


def test_export_round_trips_through_portable_bitmaps(tmp_path: Path) -> None:
    model = populate(tmp_path / "data", hours=3, events_per_hour=300)
    out_dir = tmp_path / "export"
    code, out, _ = run("export", "--data-dir", str(tmp_path / "data"), "--format", "jsonl",
                       "--bitmaps", str(out_dir))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    with (out_dir / "users.csv").open(newline="", encoding="utf-8") as handle:
        names = {int(row["id"]): row["user"] for row in csv.DictReader(handle)}
    for record in records:
        users, clicks, impressions = model[record["hour"]]
        assert (record["unique_users"], record["clicks"], record["impressions"]) == (
            len(users), clicks, impressions)
        bitmap = BitMap.deserialize((out_dir / f"{record['hour']}.roaring").read_bytes())
        assert {names[uid] for uid in bitmap} == users
    code, out, _ = run("export", "--data-dir", str(tmp_path / "data"))
    rows = list(csv.DictReader(out.splitlines()))
    assert [int(r["hour"]) for r in rows] == sorted(model)


def test_prune_dry_run_archive_and_lock(tmp_path: Path) -> None:
    populate(tmp_path, hours=2, events_per_hour=20)
    code, out, _ = run("prune", "--data-dir", str(tmp_path), "--older-than", "30d", "--dry-run")
    assert code == 0 and out.count("would remove") == 2
    assert len(DataDir(tmp_path).journal_hours()) == 2

    datadir = DataDir(tmp_path)
    datadir.lock.acquire()  # as a running server would
    try:
        code, _, err = run("prune", "--data-dir", str(tmp_path), "--older-than", "30d")
        assert code == 3 and "in use" in err
    finally:
        datadir.lock.release()

    archive = tmp_path / "archive"
    code, out, _ = run("prune", "--data-dir", str(tmp_path), "--older-than", "30d",
                       "--archive", str(archive))
    assert code == 0
    assert DataDir(tmp_path).journal_hours() == set()
    assert len(list((archive / "journals").glob("*.sqlite"))) == 2


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "not a shardstats data directory" in capsys.readouterr().err
    populate(tmp_path, hours=1, events_per_hour=5)
    assert main(["verify", "--data-dir", str(tmp_path), "--hour", "1", "--from", "2"]) == 2
    assert main(["verify", "--data-dir", str(tmp_path), "--from", "yesterday"]) == 2
    assert main(["prune", "--data-dir", str(tmp_path), "--older-than", "ninety"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--bogus"])
    assert exit_info.value.code == 2


def test_every_command_is_documented_with_an_example() -> None:
    parser = build_parser()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    subparsers = next(a for a in parser._actions
                      if isinstance(a.choices, dict) and "serve" in a.choices)
    assert isinstance(subparsers.choices, dict)
    for name, sub in subparsers.choices.items():
        assert "examples:" in sub.format_help(), name
        assert f"shardstats {name}" in readme, f"README does not show `shardstats {name}`"


def test_prune_archive_with_wal_files_present(tmp_path: Path) -> None:
    """verify leaves the -wal/-shm companions a reader needs; archiving must cope."""
    populate(tmp_path / "data", hours=2, events_per_hour=30)
    assert run("verify", "--data-dir", str(tmp_path / "data"))[0] == 0
    archive = tmp_path / "archive"
    code, _, err = run("prune", "--data-dir", str(tmp_path / "data"), "--older-than", "30d",
                         "--archive", str(archive))
    assert code == 0, err
    assert len(list((archive / "journals").glob("*.sqlite"))) == 2
    assert not list((tmp_path / "data" / "journals").iterdir())


def test_prune_archive_reports_a_damaged_journal_and_goes_on(tmp_path: Path) -> None:
    populate(tmp_path, hours=3, events_per_hour=20)
    datadir = DataDir(tmp_path)
    damaged = BASE_HOUR + 1
    datadir.journal_path(damaged).write_bytes(b"this is not a database" * 100)
    archive = tmp_path / "archive"
    code, out, err = run("prune", "--data-dir", str(tmp_path), "--older-than", "30d",
                         "--archive", str(archive))
    assert code == 1, (out, err)
    assert "Traceback" not in err, err
    from shardstats.ops.common import hour_iso

    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and hour_iso(damaged) in failed[0], out
    # The others are archived all the same; the damaged one stays where it is, for a look.
    assert datadir.journal_hours() == {damaged}
    archived = {p.name for p in (archive / "journals").glob("*.sqlite")}
    assert archived == {f"{BASE_HOUR}.sqlite", f"{BASE_HOUR + 2}.sqlite"}


@pytest.mark.parametrize("kind", BLANK_KINDS)
def test_verify_reads_a_journal_without_tables_as_empty(tmp_path: Path, kind: str) -> None:
    """What a crash between creating a journal file and its tables left (earlier builds)."""
    populate(tmp_path, hours=1, events_per_hour=20)
    path = DataDir(tmp_path).journal_path(BASE_HOUR + 1)
    write_blank_journal(path, kind)
    before = path.read_bytes()
    code, out, err = run("verify", "--data-dir", str(tmp_path), "--json")
    assert code == 0, (out, err)
    report = {h["hour"]: h for h in json.loads(out)["hours"]}
    blank = report[BASE_HOUR + 1]
    assert blank["status"] == "ok" and blank["events"] == 0, blank
    assert any("no tables" in note for note in blank["notes"]), blank
    code, out, err = run("compact", "--data-dir", str(tmp_path))
    assert code == 0, (out, err)
    assert path.read_bytes() == before

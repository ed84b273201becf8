"""The dictionary keeps users.issued: written off the request path while ids are assigned,
never ahead of what users.sqlite holds, once more at a clean stop, and not raised after a
failed commit (``shardstats.shards.mark_keeper``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from shardstats.errors import StorageError
from shardstats.shards.dictionary import UserDictionary
from shardstats.shards.mark_keeper import MarkKeeper
from shardstats.storage import issued
from shardstats.storage.datadir import DataDir
from shardstats.storage.users import UserStore


def dictionary_for(datadir: DataDir, interval: float) -> UserDictionary:
    dictionary = UserDictionary(datadir, cache_size=100)
    dictionary.marks = MarkKeeper(datadir, interval)
    return dictionary


async def test_the_mark_follows_the_ids_and_is_never_ahead_of_the_dictionary(
    tmp_path: Path,
) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    dictionary = dictionary_for(datadir, interval=0.002)
    seen: list[tuple[int, int]] = []
    done = False

    async def watch() -> None:
        # What a restart at any moment would compare: the mark first, then the table.
        while not done:
            mark = await trio.to_thread.run_sync(datadir.read_users_mark)
            state = await trio.to_thread.run_sync(issued.dictionary_state, datadir.users_path)
            if mark is not None and state is not None:
                seen.append((mark.ids, state.ids))
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        await nursery.start(dictionary.run)
        nursery.start_soon(watch)
        for batch in range(150):
            await dictionary.uids_for([f"u{batch}-{i}" for i in range(20)])
            await trio.sleep(0.001)
        done = True
        dictionary.close()
    assert dictionary.marks.writes > 2
    assert seen and all(mark <= held for mark, held in seen), seen
    assert any(0 < mark < 3000 for mark, _ in seen)  # written while ids were assigned
    with datadir.open_users() as store:
        assert datadir.read_users_mark() == issued.Mark(store.seed, 3000)  # the last, at stop


async def test_a_failed_commit_freezes_the_mark_until_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    insert = UserStore._insert
    failures = [True]

    def failing_once(self: UserStore, *args: Any) -> dict[str, int]:
        if failures:
            failures.pop()
            raise StorageError("disk I/O error")
        return insert(self, *args)

    dictionary = dictionary_for(datadir, interval=0.001)
    async with trio.open_nursery() as nursery:
        await nursery.start(dictionary.run)
        await dictionary.uids_for(["a", "b"])
        with trio.fail_after(10):  # the keeper writes within its interval
            while True:
                mark = datadir.read_users_mark()
                if mark is not None and mark.ids == 2:
                    break
                await trio.sleep(0.001)
        monkeypatch.setattr(UserStore, "_insert", failing_once)
        with pytest.raises(StorageError):
            await dictionary.uids_for(["c"])
        await dictionary.uids_for(["d", "e"])
        await trio.sleep(0.05)
        dictionary.close()
    mark = datadir.read_users_mark()
    assert mark is not None and mark.ids == 2  # not 4, not even at the clean stop

    dictionary = dictionary_for(datadir, interval=0.001)  # a new start trusts the file again
    async with trio.open_nursery() as nursery:
        await nursery.start(dictionary.run)
        dictionary.close()
    mark = datadir.read_users_mark()
    assert mark is not None and mark.ids == 4


async def test_a_mark_that_cannot_be_written_only_lags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()

    def full_disk(self: DataDir, mark: issued.Mark) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DataDir, "write_users_mark", full_disk)
    dictionary = dictionary_for(datadir, interval=0.001)
    async with trio.open_nursery() as nursery:
        await nursery.start(dictionary.run)
        assert await dictionary.uids_for(["a", "b"]) == [1, 2]
        await trio.sleep(0.02)
        dictionary.close()
    assert datadir.read_users_mark() is None

"""The dictionary actor: ids stay exact while its index upkeep runs beside the commits."""

from __future__ import annotations

from pathlib import Path

import trio

from shardstats.shards.dictionary import UserDictionary
from shardstats.storage.datadir import DataDir


async def test_upkeep_beside_commits_keeps_ids_exact_across_a_restart(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    model: dict[str, int] = {}
    for life in range(2):
        # A tiny cache: most known names go back to the store, through the runs.
        dictionary = UserDictionary(datadir, cache_size=10, tail_size=16)
        async with trio.open_nursery() as nursery:
            await nursery.start(dictionary.run)
            for round_no in range(40):
                names = [f"u{(round_no * 7 + i * 13 + life) % 700}" for i in range(30)]
                uids = await dictionary.uids_for(names)
                for name, uid in zip(names, uids, strict=True):
                    assert model.setdefault(name, uid) == uid, name
            dictionary.close()
        # run() returns only after the upkeep it started has finished.
        assert dictionary.statistics().index_upkeeps > 0
    store = datadir.open_users(tail_size=16)
    try:
        assert store.indexed > 0
        assert store.assign(list(model)) == model
    finally:
        store.close()
    assert sorted(model.values()) == list(range(1, len(model) + 1))


async def test_a_batch_of_mostly_new_names_gets_exact_ids_and_the_cache_stays_bounded(
        tmp_path: Path) -> None:
    """Many misses in one batch, repeated names among them, and known names between."""
    datadir = DataDir(tmp_path)
    datadir.prepare()
    dictionary = UserDictionary(datadir, cache_size=50)
    async with trio.open_nursery() as nursery:
        await nursery.start(dictionary.run)
        first = await dictionary.uids_for([f"a{i % 300}" for i in range(1000)])
        assert first[:300] == list(range(1, 301)) and first[300:] == first[:300] * 2 + first[:100]
        mixed = [f"a{i}" if i % 3 else f"b{i}" for i in range(600)]
        uids = await dictionary.uids_for(mixed)
        for name, uid in zip(mixed, uids, strict=True):
            if name.startswith("a") and int(name[1:]) < 300:
                assert uid == int(name[1:]) + 1
        assert len(set(uids)) == len(set(mixed))
        assert dictionary.statistics().cached_users == 50
        dictionary.close()

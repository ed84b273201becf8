"""Many requesters at once: one commit's id dict is shared between them (read-only), the
cache evicts between a request and its answer, and every requester still gets, name by name,
the one id the store holds for that name."""

from __future__ import annotations

import random
from pathlib import Path

import trio
import trio.lowlevel

from shardstats.shards.dictionary import UserDictionary
from shardstats.storage.datadir import DataDir


async def test_concurrent_requesters_of_overlapping_new_names_get_one_id_per_name(
        tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    datadir.prepare()
    rng = random.Random(7)
    answers: list[tuple[list[str], list[int]]] = []
    dictionary = UserDictionary(datadir, cache_size=20, tail_size=16)

    async def requester(number: int) -> None:
        for round_no in range(15):
            names = [f"u{rng.randrange(400)}" for _ in range(rng.randint(1, 60))]
            names += [f"p{number}-{round_no}-{k}" for k in range(3)]  # new to everyone
            names += names[:5]  # repeated within the request
            uids = await dictionary.uids_for(names)
            answers.append((list(names), list(uids)))
            uids.clear()  # a requester changing its answer changes no one else's
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        await nursery.start(dictionary.run)
        async with trio.open_nursery() as clients:
            for number in range(12):
                clients.start_soon(requester, number)
        dictionary.close()
    assert dictionary.statistics().commits < len(answers)  # requests did share commits
    model: dict[str, int] = {}
    for names, uids in answers:
        assert len(names) == len(uids)
        for name, uid in zip(names, uids, strict=True):
            assert model.setdefault(name, uid) == uid, name
    assert sorted(model.values()) == list(range(1, len(model) + 1))
    with datadir.open_users(tail_size=16) as store:
        assert store.assign(list(model)) == model

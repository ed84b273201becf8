"""Stream records and the per-hour admission rule (``core.stream``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardstats.core import stream
from shardstats.core.events import EventColumns
from shardstats.core.stream import StreamTag, Verdict, admit


@given(st.lists(st.tuples(st.integers(0, 2**62), st.text(min_size=1).filter(
    lambda u: "\n" not in u), st.sampled_from([1, 2]),
    st.one_of(st.none(), st.text(min_size=1).filter(lambda i: "\n" not in i))), min_size=1))
def test_records_round_trip(rows: list[tuple[int, str, int, str | None]]) -> None:
    ids = [r[3] for r in rows]
    events = EventColumns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                          None if ids.count(None) == len(ids) else ids)
    assert stream.decode(stream.encode(events)) == events


@pytest.mark.parametrize("data", [
    b"", b"\x93\x01\x02\x03", stream._encoder.encode((2, [1], ["u"], [1], None)),
    stream._encoder.encode((1, [1], ["u"], [3], None)),
    stream._encoder.encode((1, [1], [""], [1], None)),
    stream._encoder.encode((1, [-1], ["u"], [1], None)),
    stream._encoder.encode((1, [1, 2], ["u"], [1], None)),
    stream._encoder.encode((1, [1], ["a\nb"], [1], None)),
    stream._encoder.encode((1, [], [], [], None)),
])
def test_records_that_are_not_blocks_are_refused(data: bytes) -> None:
    with pytest.raises(stream.InvalidRecord):
        stream.decode(data)


def test_admit_skips_redeliveries_refuses_gaps_applies_the_rest() -> None:
    tags = [StreamTag(3, None), StreamTag(5, 3), StreamTag(7, 6), StreamTag(9, 5),
            StreamTag(4, None)]
    verdicts, applied = admit(3, tags)
    assert verdicts == [Verdict.SKIP, Verdict.APPLY, Verdict.REFUSE, Verdict.APPLY,
                        Verdict.SKIP]
    assert applied == 9
    assert admit(0, [StreamTag(2, 1)]) == ([Verdict.REFUSE], 0)  # its predecessor is missing
    assert admit(0, [StreamTag(2, None)]) == ([Verdict.APPLY], 2)  # first of a pass


def test_records_a_journal_cannot_hold_are_refused_alike_everywhere() -> None:
    big = stream._encoder.encode((1, [2**63], ["u"], [1], None))
    with pytest.raises(stream.InvalidRecord, match="timestamp"):
        stream.decode(big)
    hours = stream.MAX_HOURS_PER_RECORD + 1
    spread = EventColumns([h * 3_600_000 for h in range(hours)], ["u"] * hours, [1] * hours)
    with pytest.raises(stream.InvalidRecord, match="hours"):
        stream.decode(stream.encode(spread))
    many = EventColumns([5] * hours, ["u"] * hours, [1] * hours)  # many events, one hour: fine
    assert stream.decode(stream.encode(many)) == many

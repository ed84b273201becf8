"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

from shardstats.core.events import HOUR_MS, Event, EventKind

BASE_HOUR = 493_000  # an hour in 2026

users = st.sampled_from([f"user-{i}" for i in range(12)]) | st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=["Cs"]),
    min_size=1,
    max_size=8,
)
kinds = st.sampled_from([EventKind.CLICK, EventKind.IMPRESSION])


def events(hours: int = 4, base_hour: int = BASE_HOUR) -> st.SearchStrategy[Event]:
    """Events over a few hours, timestamps anywhere inside them (boundaries included)."""
    offsets = st.integers(0, HOUR_MS - 1) | st.sampled_from([0, 1, HOUR_MS - 1])
    return st.builds(
        lambda h, off, user, kind: Event((base_hour + h) * HOUR_MS + off, user, kind),
        st.integers(0, hours - 1),
        offsets,
        users,
        kinds,
    )

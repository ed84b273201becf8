"""Batch judging over raw byte bodies: the fast path (and its plain-window shortcut, which
skips the per-user ASCII and control-character scans) gives each line exactly the verdict
the per-line rules give it alone.

Users and ids are spliced into the lines as raw bytes, not through a JSON encoder: raw UTF-8,
DEL, C1 bytes, raw C0 bytes (invalid in JSON strings), invalid UTF-8, and escapes of all of
those (``\\u0000``, ``\\"``, ``\\\\``, ``\\/``, lone surrogates). Mostly-valid pieces keep
whole windows valid often enough for the fast path to take them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shardstats.core.batch import _event, parse_batch
from shardstats.core.validation import Limits
from shardstats.errors import InvalidInput

NOW = 1_780_000_000_000
LIMITS = Limits(max_user_bytes=8)

PLAIN = [b"a", b"Z", b"0", b" ", b"~", b"_"]
ODD = [b"\x7f", b"\xc2\x85", b"\xc2\x9f", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\x01", b"\t",
       b"\xff", b"\\u0000", b"\\u001f", b"\\u007f", b"\\u0085", b"\\u00e9", b'\\"', b"\\\\",
       b"\\/", b"\\ud800", b"\\udfff", b"\\ud83d\\ude00", b"\\n", b"\\t", b"\\u0061", b"\\x"]

piece = st.sampled_from(PLAIN) | st.sampled_from(ODD)
plain_text = st.lists(st.sampled_from(PLAIN), min_size=0, max_size=10).map(b"".join)
any_text = st.lists(piece, min_size=0, max_size=10).map(b"".join)
text = st.one_of(plain_text, plain_text, any_text)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    user = draw(text)
    parts = [b'"timestamp": %d' % draw(st.integers(NOW - 10**6, NOW)),
             b'"user": "' + user + b'"',
             b'"event": "%s"' % draw(st.sampled_from([b"click", b"impression"]))]
    if draw(st.booleans()):
        parts.append(b'"id": "' + draw(text) + b'"')
    return b"{" + b", ".join(parts) + b"}"


def alone(raw: bytes) -> tuple[object, str | None]:
    try:
        return _event(raw, NOW, LIMITS), None
    except InvalidInput as exc:
        return None, str(exc)


@settings(max_examples=400)
@given(st.lists(lines(), min_size=1, max_size=20))
def test_each_line_of_a_raw_body_gets_the_verdict_it_gets_alone(body_lines: list[bytes]) -> None:
    verdicts = parse_batch(b"\n".join(body_lines), NOW, LIMITS)
    assert [(v.event, v.error) for v in verdicts] == list(map(alone, body_lines))


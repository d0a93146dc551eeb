"""The C fast path (``wire/_forward.c``) against the pure-Python forwarder: same bytes out.

Differential property test: random client streams (whole messages,
fragments, control frames, protocol errors, ``max_message`` caps) cut at
random points, fed once to a forwarder using the fast path (on writable
buffers, as the listener does) and once to one without it.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swsrs.wire import frames
from swsrs.wire.frames import FrameForwarder, ProtocolError, frame_header

pytestmark = pytest.mark.skipif(not frames.FAST_PATH, reason="C fast path not built")

SIZES = st.one_of(
    st.integers(0, 300),
    st.sampled_from([125, 126, 127, 65535, 65536, 65537]),
    st.integers(0, 70_000),
)


@st.composite
def client_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["text", "binary", "binary", "frag", "ping", "pong", "bad"]))
    mask = draw(st.binary(min_size=4, max_size=4))
    if kind in ("ping", "pong"):
        payload = draw(st.binary(max_size=125))
        return frame_header(True, 0x9 if kind == "ping" else 0xA, len(payload), mask) + (
            frames.apply_mask(payload, mask)
        )
    if kind == "frag":
        parts = draw(st.lists(st.binary(max_size=2000), min_size=2, max_size=4))
        out = b""
        for i, part in enumerate(parts):
            m = draw(st.binary(min_size=4, max_size=4))
            op = 0x2 if i == 0 else 0x0
            out += frame_header(i == len(parts) - 1, op, len(part), m) + frames.apply_mask(part, m)
        return out
    if kind == "bad":
        bad = draw(st.sampled_from(["unmasked", "rsv", "opcode", "cont"]))
        if bad == "unmasked":
            return frame_header(True, 0x2, 3) + b"abc"
        head = bytearray(frame_header(True, 0x2 if bad != "cont" else 0x0, 3, mask))
        if bad == "rsv":
            head[0] |= 0x40
        if bad == "opcode":
            head[0] = (head[0] & 0xF0) | 0x3
        return bytes(head) + frames.apply_mask(b"abc", mask)
    payload = os.urandom(draw(SIZES))
    op = 0x1 if kind == "text" else 0x2
    return frame_header(True, op, len(payload), mask) + frames.apply_mask(payload, mask)


def run(
    stream: bytes, cuts: list[int], *, fast: bool, cap: int
) -> tuple[bytes, list[object], int, object]:
    fwd = FrameForwarder(cap, fast=fast)
    out = bytearray()
    error: object = None
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    try:
        for a, b in itertools.pairwise(points):
            buf = bytearray(stream[a:b])  # writable, like the listener's read buffer
            fwd.feed(memoryview(buf))
            for part in fwd.out:
                out += part  # consumed before the buffer is reused
            fwd.out = []
            buf[:] = b"\xaa" * len(buf)  # reuse: nothing may still point here
    except ProtocolError as exc:
        error = (exc.code, exc.reason)
    return bytes(out), list(fwd.controls), fwd.payload_bytes, error


@settings(max_examples=300, deadline=None)
@given(
    st.lists(client_frame(), min_size=1, max_size=12),
    st.lists(st.integers(0, 10**6), max_size=8),
    st.sampled_from([-1, -1, 1000, 65536]),
)
def test_fast_path_matches_python(frames_: list[bytes], cuts: list[int], cap: int) -> None:
    stream = b"".join(frames_)
    assert run(stream, cuts, fast=True, cap=cap) == run(stream, cuts, fast=False, cap=cap)


def test_readonly_data_takes_the_python_path() -> None:
    mask = b"\x01\x02\x03\x04"
    frame = frame_header(True, 2, 5, mask) + frames.apply_mask(b"hello", mask)
    fwd = FrameForwarder()
    fwd.feed(frame)  # bytes: nothing may be written in place
    assert b"".join(fwd.out) == frame_header(True, 2, 5) + b"hello"
    assert frame == frame_header(True, 2, 5, mask) + frames.apply_mask(b"hello", mask)


def test_writable_data_is_reframed_in_place() -> None:
    mask = b"\x01\x02\x03\x04"
    one = frame_header(True, 2, 5, mask) + frames.apply_mask(b"hello", mask)
    buf = bytearray(one * 3)
    fwd = FrameForwarder()
    fwd.feed(memoryview(buf))
    assert len(fwd.out) == 1 and isinstance(fwd.out[0], memoryview)
    assert fwd.out[0].obj is buf  # a view of the read buffer: no copy was made
    assert bytes(fwd.out[0]) == (frame_header(True, 2, 5) + b"hello") * 3
    assert fwd.payload_bytes == 15

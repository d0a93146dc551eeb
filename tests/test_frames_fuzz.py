"""Property tests of the relay's frame forwarder (``swsrs.wire.frames.FrameForwarder``).

Random message sequences are encoded as a client would (masked, fragmented,
with ping/pong frames between fragments), fed to the forwarder cut at random
points, and its output is decoded with the small independent parser below as
a client would decode a server's frames. Nothing here reuses the module's own
encoder: ``encode_client_frame`` and ``decode_server_frames`` are written from
RFC 6455 section 5.2.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import random
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swsrs.wire.frames import FrameForwarder, ProtocolError, parse_close

from .conftest import Relay

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# The length encodings' edges (7-bit, 16-bit, 64-bit) and their neighbours.
EDGE_SIZES = [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537]

# -- an independent encoder and decoder ----------------------------------------------------


def _xor(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def encode_client_frame(
    fin: bool, opcode: int, payload: bytes, mask: bytes, *, rsv: int = 0, masked: bool = True
) -> bytes:
    """One client-to-server frame: masked, minimal length encoding (RFC 6455 5.2)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if masked else 0
    if n <= 125:
        head = bytes([b0, mbit | n])
    elif n <= 0xFFFF:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + mask + _xor(payload, mask)


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


def decode_server_frames(data: bytes) -> tuple[list[Frame], int]:
    """Complete server frames in ``data`` and the number of bytes they span.

    Asserts what a client must check: unmasked, no RSV bits, minimal lengths.
    """
    frames: list[Frame] = []
    pos = 0
    while True:
        if len(data) - pos < 2:
            return frames, pos
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames must not be masked"
        assert not b0 & 0x70, "RSV bits set"
        n = b1 & 0x7F
        at = pos + 2
        if n == 126:
            if len(data) - at < 2:
                return frames, pos
            n = int.from_bytes(data[at : at + 2], "big")
            assert n > 125, "non-minimal 16-bit length"
            at += 2
        elif n == 127:
            if len(data) - at < 8:
                return frames, pos
            n = int.from_bytes(data[at : at + 8], "big")
            assert n > 0xFFFF, "non-minimal 64-bit length"
            at += 8
        if len(data) - at < n:
            return frames, pos
        frames.append(Frame(bool(b0 & 0x80), b0 & 0x0F, bytes(data[at : at + n])))
        pos = at + n


def decode_all(data: bytes) -> list[Frame]:
    frames, used = decode_server_frames(data)
    assert used == len(data), f"{len(data) - used} trailing bytes: output ends inside a frame"
    return frames


# -- generated client streams ----------------------------------------------------------------


@dataclass
class Encoded:
    """A client byte stream and what the forwarder must make of it."""

    stream: bytes
    data_frames: list[Frame]  # in order, as they must come out
    controls: list[tuple[int, bytes]]
    # Per data frame: (offset where its header ends, offset where its payload ends).
    spans: list[tuple[int, int]]
    # Offsets of every frame start (headers included), for cuts inside headers.
    starts: list[int]


sizes = st.one_of(
    st.sampled_from(EDGE_SIZES),
    st.integers(0, 300),
    st.integers(0, 200 * 1024),
)

message = st.tuples(
    st.sampled_from([TEXT, BINARY]),
    sizes,
    st.lists(st.floats(0, 1), max_size=4),  # fragment cut points, as fractions
    st.lists(  # control frames after each fragment: (opcode, size) or None
        st.one_of(st.none(), st.tuples(st.sampled_from([PING, PONG]), st.integers(0, 125))),
        max_size=5,
    ),
)


def encode_messages(msgs: list[tuple[int, int, list[float], list[object]]], seed: int) -> Encoded:
    rnd = random.Random(seed)
    out = bytearray()
    data_frames: list[Frame] = []
    controls: list[tuple[int, bytes]] = []
    spans: list[tuple[int, int]] = []
    starts: list[int] = []
    for opcode, size, cuts, ctrl in msgs:
        payload = rnd.randbytes(size)
        points = sorted({0, size, *(int(c * size) for c in cuts)})
        if len(points) == 1:  # an empty message: one empty frame
            points = [0, 0]
        pieces = [payload[a:b] for a, b in itertools.pairwise(points)]
        for i, piece in enumerate(pieces):
            fin = i == len(pieces) - 1
            op = opcode if i == 0 else CONT
            frame = encode_client_frame(fin, op, piece, rnd.randbytes(4))
            starts.append(len(out))
            head_len = len(frame) - len(piece)
            spans.append((len(out) + head_len, len(out) + len(frame)))
            out += frame
            data_frames.append(Frame(fin, op, piece))
            # Control frames may come between fragments and between messages.
            c = ctrl[i] if i < len(ctrl) else None
            if c is not None:
                cop, csize = c  # type: ignore[misc]
                cpayload = rnd.randbytes(csize)
                starts.append(len(out))
                out += encode_client_frame(True, cop, cpayload, rnd.randbytes(4))
                controls.append((cop, cpayload))
    return Encoded(bytes(out), data_frames, controls, spans, starts)


def cut_points(enc: Encoded, style: str, seed: int) -> list[int]:
    """Where to cut the stream into feeds (sorted offsets, ends excluded)."""
    n = len(enc.stream)
    rnd = random.Random(seed)
    if style == "bytes" and n <= 20_000:
        return list(range(1, n))
    if style == "headers":  # cut inside every header, and at its very start
        cuts = set()
        for s in enc.starts:
            cuts.add(s)
            cuts.add(s + 1)
            cuts.add(s + rnd.randint(1, 13))
        return sorted(c for c in cuts if 0 < c < n)
    if style == "one":
        return []
    k = rnd.randint(1, 60)
    return sorted({rnd.randint(1, max(1, n - 1)) for _ in range(k)} - {n})


def feeds(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


cut_style = st.sampled_from(["bytes", "headers", "random", "random", "one"])
seeds = st.integers(0, 2**32 - 1)

# -- byte-exact forwarding -------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(message, min_size=1, max_size=6), seeds, cut_style, st.booleans())
def test_forwards_byte_exact(
    msgs: list[tuple[int, int, list[float], list[object]]], seed: int, style: str, reuse: bool
) -> None:
    """``reuse``: feed views of one writable buffer that is overwritten after every read, as
    the listener does (this is where the C fast path re-frames in place)."""
    enc = encode_messages(msgs, seed)
    fwd = FrameForwarder()
    out: list[bytes] = []
    for chunk in feeds(enc.stream, cut_points(enc, style, seed)):
        if reuse:
            buf = bytearray(chunk)
            fwd.feed(memoryview(buf))
            out += [bytes(b) for b in fwd.out]  # consumed before the buffer is reused
            buf[:] = b"\xee" * len(buf)
        else:
            fwd.feed(chunk)
            out += fwd.out
        fwd.out = []
        # Whatever has come out so far ends on a frame boundary unless a frame is open.
        _, used = decode_server_frames(b"".join(out))
        assert fwd.mid_frame or used == sum(map(len, out))
    assert not fwd.mid_frame
    assert decode_all(b"".join(out)) == enc.data_frames
    assert fwd.controls == enc.controls
    assert fwd.payload_bytes == sum(len(f.payload) for f in enc.data_frames)
    assert all(isinstance(b, bytes | bytearray | memoryview) for b in out)


def test_edge_sizes_single_byte_feeds() -> None:
    """Every length edge, unfragmented and fragmented at the edge, fed one byte at a time."""
    msgs: list[tuple[int, int, list[float], list[object]]] = []
    for size in EDGE_SIZES:
        msgs.append((BINARY, size, [], [(PING, 125)]))
        msgs.append((TEXT, size, [0.5], [(PONG, 0), None]))
    enc = encode_messages(msgs, 1)
    fwd = FrameForwarder()
    out = bytearray()
    for i in range(len(enc.stream)):
        fwd.feed(enc.stream[i : i + 1])
        for b in fwd.out:
            out += b
        fwd.out = []
    assert decode_all(bytes(out)) == enc.data_frames
    assert fwd.controls == enc.controls


# -- the message cap -------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(
    st.lists(message, min_size=1, max_size=5),
    st.integers(1, 70_000),
    seeds,
    cut_style,
)
def test_max_message(
    msgs: list[tuple[int, int, list[float], list[object]]], cap: int, seed: int, style: str
) -> None:
    enc = encode_messages(msgs, seed)
    fwd = FrameForwarder(max_message=cap)
    out: list[bytes] = []
    error: ProtocolError | None = None
    for chunk in feeds(enc.stream, cut_points(enc, style, seed)):
        try:
            fwd.feed(chunk)
        except ProtocolError as exc:
            error = exc
            break
        finally:
            out += fwd.out
            fwd.out = []
    # The expected outcome: every message whose running size stays within the cap passes.
    expected: list[Frame] = []
    too_big = False
    running = 0
    for f in enc.data_frames:
        running = len(f.payload) if f.opcode != CONT else running + len(f.payload)
        if running > cap:
            too_big = True
            break
        expected.append(f)
    got = decode_all(b"".join(out))
    if too_big:
        assert error is not None and error.code == 1009, error
        # The offending frame's header never came out, so nothing beyond the cap did.
        assert got == expected
        opened = [f for f in got if f.opcode != CONT]
        if opened:
            last = got[got.index(opened[-1]) :]
            assert sum(len(f.payload) for f in last) <= cap
    else:
        assert error is None
        assert got == enc.data_frames


def test_max_message_exact_cap_passes_one_more_byte_fails() -> None:
    for cap in (125, 126, 65535, 65536):
        fwd = FrameForwarder(max_message=cap)
        half = cap // 2
        fwd.feed(encode_client_frame(False, BINARY, b"x" * half, b"abcd"))
        fwd.feed(encode_client_frame(True, CONT, b"y" * (cap - half), b"efgh"))
        assert len(decode_all(b"".join(fwd.out))) == 2
        fwd = FrameForwarder(max_message=cap)
        fwd.feed(encode_client_frame(False, BINARY, b"x" * half, b"abcd"))
        with pytest.raises(ProtocolError) as exc:
            fwd.feed(encode_client_frame(True, CONT, b"y" * (cap - half + 1), b"efgh"))
        assert exc.value.code == 1009
        assert decode_all(b"".join(fwd.out)) == [Frame(False, BINARY, b"x" * half)]


# -- protocol errors -------------------------------------------------------------------------


def _bad_frame(kind: str, rnd: random.Random) -> bytes:
    mask = rnd.randbytes(4)
    payload = rnd.randbytes(rnd.choice([0, 5, 200]))
    if kind == "unmasked":
        return encode_client_frame(True, BINARY, payload, mask, masked=False)
    if kind == "unmasked-control":
        return encode_client_frame(True, PING, payload[:100], mask, masked=False)
    if kind == "rsv":
        rsv = rnd.choice([0x40, 0x20, 0x10, 0x70])
        return encode_client_frame(True, rnd.choice([BINARY, TEXT, PING]), payload[:100], mask,
                                   rsv=rsv)  # fmt: skip
    if kind == "unknown-opcode":
        op = rnd.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
        return encode_client_frame(True, op, payload[:100], mask)
    if kind == "orphan-continuation":
        return encode_client_frame(rnd.random() < 0.5, CONT, payload, mask)
    if kind == "big-control":
        big = rnd.randbytes(rnd.choice([126, 127, 300, 70000]))
        return encode_client_frame(True, rnd.choice([PING, PONG, CLOSE]), big, mask)
    if kind == "fragmented-control":
        return encode_client_frame(False, rnd.choice([PING, PONG, CLOSE]), payload[:100], mask)
    if kind == "length-top-bit":
        return bytes([0x82, 0xFF]) + struct.pack("!Q", (1 << 63) | 5) + mask + payload[:5]
    raise AssertionError(kind)


ERROR_KINDS = [
    "unmasked",
    "unmasked-control",
    "rsv",
    "unknown-opcode",
    "orphan-continuation",
    "big-control",
    "fragmented-control",
    "length-top-bit",
    "message-inside-fragmented",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(message, max_size=3),
    st.sampled_from(ERROR_KINDS),
    seeds,
    cut_style,
)
def test_protocol_errors(
    msgs: list[tuple[int, int, list[float], list[object]]], kind: str, seed: int, style: str
) -> None:
    rnd = random.Random(seed ^ 0x5EED)
    enc = encode_messages(msgs, seed)
    stream = enc.stream
    expected = list(enc.data_frames)
    if kind == "message-inside-fragmented":
        first = rnd.randbytes(rnd.choice([0, 3, 300]))
        op = rnd.choice([TEXT, BINARY])
        stream += encode_client_frame(False, op, first, rnd.randbytes(4))
        expected.append(Frame(False, op, first))
        if rnd.random() < 0.5:  # a ping between fragments is fine; the new message is not
            stream += encode_client_frame(True, PING, b"ok", rnd.randbytes(4))
        bad = encode_client_frame(True, rnd.choice([TEXT, BINARY]), b"new", rnd.randbytes(4))
    else:
        bad = _bad_frame(kind, rnd)
    full = stream + bad
    enc_full = Encoded(full, [], [], [], [*enc.starts, len(enc.stream), len(stream)])
    fwd = FrameForwarder()
    out: list[bytes] = []
    with pytest.raises(ProtocolError) as exc:
        for chunk in feeds(full, cut_points(enc_full, style, seed)):
            try:
                fwd.feed(chunk)
            finally:
                out += fwd.out
                fwd.out = []
    assert exc.value.code == 1002, (kind, exc.value.reason)
    # Everything before the bad frame came out whole; nothing of the bad frame did.
    assert decode_all(b"".join(out)) == expected


def _server_frame(fin: bool, opcode: int, payload: bytes) -> bytes:
    return encode_client_frame(fin, opcode, payload, b"", masked=False)


# -- relay-originated frames between forwarded frames ----------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(message, min_size=1, max_size=5), seeds, cut_style, st.floats(0, 1))
def test_send_between_frames(
    msgs: list[tuple[int, int, list[float], list[object]]],
    seed: int,
    style: str,
    how_often: float,
) -> None:
    enc = encode_messages(msgs, seed)
    rnd = random.Random(seed)
    fwd = FrameForwarder()
    out = bytearray()
    where: dict[bytes, int] = {}  # marker payload -> data frames started when it was sent
    pos = 0
    for chunk in feeds(enc.stream, cut_points(enc, style, seed)):
        fwd.feed(chunk)
        pos += len(chunk)
        for b in fwd.out:
            out += b
        fwd.out = []
        started = sum(1 for head_end, _ in enc.spans if head_end <= pos)
        inside = any(head_end <= pos < end for head_end, end in enc.spans)
        assert fwd.mid_frame == inside
        if rnd.random() < how_often:
            marker = len(where).to_bytes(4, "big") + b"marker"
            frame = _server_frame(True, PONG, marker)
            where[marker] = started
            if not fwd.send_between_frames(frame):
                assert not inside
                out += frame  # the caller writes it at once
            else:
                assert inside
    frames = decode_all(bytes(out))
    data = [f for f in frames if f.opcode != PONG]
    assert data == enc.data_frames
    seen = 0
    order = []
    for f in frames:
        if f.opcode == PONG:
            assert where[f.payload] == seen, "a relay frame came out at the wrong boundary"
            order.append(f.payload)
        else:
            seen += 1
    assert order == sorted(where, key=lambda m: int.from_bytes(m[:4], "big"))
    assert not fwd.queued


# -- end to end: a real relay process --------------------------------------------------------


async def _open(
    relay: Relay, sid: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", relay.port, limit=1 << 22)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(
        f"GET /relay/{sid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return r, w


async def _read_frames(r: asyncio.StreamReader, count: int) -> list[Frame]:
    frames: list[Frame] = []
    buf = b""
    while len(frames) < count:
        got, used = decode_server_frames(buf)
        if got:
            frames += [f for f in got if f.opcode not in (PING, PONG)]
            buf = buf[used:]
            continue
        chunk = await asyncio.wait_for(r.read(1 << 20), 20)
        assert chunk, "relay closed the connection"
        buf += chunk
    return frames


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(message, min_size=1, max_size=6), seeds, cut_style)
def test_end_to_end_through_relay(
    relay: Relay,
    msgs: list[tuple[int, int, list[float], list[object]]],
    seed: int,
    style: str,
) -> None:
    enc = encode_messages(msgs, seed)
    if style == "bytes":  # one byte per write is slow over real sockets; keep it small
        style = "headers"
    chunks = feeds(enc.stream, cut_points(enc, style, seed))

    async def run() -> list[Frame]:
        s = relay.create()
        ra, wa = await _open(relay, s["id"], s["initiator_token"])
        rb, wb = await _open(relay, s["id"], s["responder_token"])

        async def send() -> None:
            for c in chunks:
                wa.write(c)
                await wa.drain()

        async def drain_pongs() -> None:  # the relay answers A's pings
            while await ra.read(1 << 16):
                pass

        sender = asyncio.create_task(send())
        ponger = asyncio.create_task(drain_pongs())
        try:
            frames = await asyncio.wait_for(_read_frames(rb, len(enc.data_frames)), 60)
            await sender
        finally:
            ponger.cancel()
            wa.close()
            wb.close()
        return frames

    assert asyncio.run(run()) == enc.data_frames


# -- once bugs -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_parse_close_accepts_registered_codes_1012_to_1014(code: int) -> None:
    assert parse_close(struct.pack("!H", code) + b"bye") == (code, "bye")

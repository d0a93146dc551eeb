"""RFC 6455 5.5.1: a close frame ends what a peer sends. Nothing after a client's close,
or after a malformed close, may reach the other peer: checked on the forwarder's pure-Python
and C paths, fed whole and cut at every byte, and through a real relay with raw sockets."""

from __future__ import annotations

import asyncio
import itertools
import struct

import pytest
import websockets

from swsrs.wire.frames import FAST_PATH, FrameForwarder, ProtocolError

from .conftest import Relay
from .test_frames_fuzz import BINARY, CLOSE, TEXT, decode_server_frames
from .test_relay import attach, closed_with, masked, raw_open, read_close

VALID = {
    "no payload": b"",
    "normal": struct.pack("!H", 1000),
    "with reason": struct.pack("!H", 4000) + "bye ✓".encode(),
}
MALFORMED = {
    "1-byte payload": (b"\x03", 1002),
    "invalid code 999": (struct.pack("!H", 999), 1002),
    "invalid code 1005": (struct.pack("!H", 1005), 1002),
    "reason not UTF-8": (struct.pack("!H", 1000) + b"\xff\xfe", 1007),
}
PATHS = [pytest.param(False, id="python")] + ([pytest.param(True, id="C")] if FAST_PATH else [])


def stream(close: bytes) -> tuple[bytes, int]:
    """Data, a close with ``close`` as payload, then more data; and where the close ends."""
    before = masked(True, BINARY, b"before") + masked(True, TEXT, b"also before")
    c = masked(True, CLOSE, close)
    after = masked(True, BINARY, b"after the close") + masked(True, TEXT, b"x" * 300)
    return before + c + after + masked(True, BINARY, b"y" * 70000), len(before) + len(c)


def run(fwd: FrameForwarder, data: bytes, cuts: list[int]) -> tuple[bytes, ProtocolError | None]:
    """Feed ``data`` cut at ``cuts`` (writable, so the C path applies); what was forwarded."""
    out = bytearray()
    error = None
    bounds = [0, *cuts, len(data)]
    for lo, hi in itertools.pairwise(bounds):
        try:
            fwd.feed(bytearray(data[lo:hi]))
        except ProtocolError as exc:
            error = error or exc
        out += b"".join(bytes(p) for p in fwd.out)
        fwd.out = []
    return bytes(out), error


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("name", list(VALID))
def test_nothing_after_a_close_is_forwarded(fast: bool, name: str) -> None:
    data, close_end = stream(VALID[name])
    for cuts in ([], *([c] for c in range(1, len(data), 7)), [close_end - 1, close_end + 3]):
        fwd = FrameForwarder(fast=fast)
        out, error = run(fwd, data, cuts)
        assert error is None
        frames, used = decode_server_frames(out)
        assert used == len(out)
        assert [f.payload for f in frames] == [b"before", b"also before"], cuts
        assert [op for op, _ in fwd.controls] == [CLOSE] and fwd.closed


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("name", list(MALFORMED))
def test_nothing_after_a_malformed_close_is_forwarded(fast: bool, name: str) -> None:
    payload, code = MALFORMED[name]
    data, close_end = stream(payload)
    for cuts in ([], [close_end - 1], [close_end], [close_end + 2], [5, close_end + 9]):
        fwd = FrameForwarder(fast=fast)
        out, error = run(fwd, data, cuts)
        assert error is not None and error.code == code, (cuts, error)
        frames, _ = decode_server_frames(out)
        assert [f.payload for f in frames] == [b"before", b"also before"], cuts


@pytest.mark.parametrize(
    ("payload", "code"),
    [(VALID["normal"], 1000), *MALFORMED.values()],
    ids=["normal", *MALFORMED],
)
@pytest.mark.parametrize("later", [False, True], ids=["same write", "later write"])
async def test_the_relay_relays_nothing_after_a_close(
    relay: Relay, payload: bytes, code: int, later: bool
) -> None:
    s = relay.create()
    b = await attach(relay, s["id"], s["responder_token"])
    r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert b" 101 " in head
    first, close_end = stream(payload)
    if later:
        w.write(first[:close_end])
        await asyncio.sleep(0.2)
        w.write(first[close_end:])
    else:
        w.write(first)
    assert await read_close(r) == code  # answered (1000) or failed (1002, 1007)
    got = []
    async with asyncio.timeout(10):
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                got.append(await b.recv())
    assert got == [b"before", "also before"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    w.close()
    st = relay.status(s["id"])
    assert st is not None and st["bytes_in"] == len(b"before") + len(b"also before")
    # The slot is free again, and a new tunnel is clean.
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"])
    await a.send(b"fresh")
    assert await b.recv() == b"fresh"
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")

"""The Python SDK against a real relay process, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Any

import pytest

import swsrs

from .conftest import Relay


async def both(relay: Relay, s: swsrs.CreatedSession) -> tuple[swsrs.Connection, swsrs.Connection]:
    acc = asyncio.create_task(swsrs.accept(relay.url, s.id, s.responder_token))
    ini = await swsrs.dial(relay.ws_url, s.id, s.initiator_token)
    return ini, await acc


async def test_admin_client_roundtrip(relay: Relay) -> None:
    calls = 0

    async def provider() -> str | None:
        nonlocal calls
        calls += 1
        return None  # --no-auth needs none; the provider is still asked per request

    async with swsrs.AdminClient(relay.url, provider) as admin:
        s = await admin.create()
        assert len(s.initiator_token) == 22 and s.expires_at > s.created_at
        st = await admin.get(s.id)
        assert st.state == "pending" and not st.initiator_connected
        assert [x.id for x in await admin.list()] == [s.id]
        await admin.delete(s.id)
        with pytest.raises(swsrs.NotFound):
            await admin.get(s.id)
        with pytest.raises(swsrs.NotFound):
            await admin.delete(s.id)
    assert calls == 6


async def test_admin_client_unreachable() -> None:
    from .conftest import free_port

    async with swsrs.AdminClient(f"http://127.0.0.1:{free_port()}") as admin:
        with pytest.raises(swsrs.RelayUnreachable):
            await admin.create()


async def test_messages_keep_type_boundaries_order(relay: Relay) -> None:
    async with swsrs.AdminClient(relay.url) as admin:
        s = await admin.create()
    a, b = await both(relay, s)
    msgs: list[bytes | str] = [b"one", "two", b"", b"\x00" * 100_000, "три"]
    for m in msgs:
        await a.send(m)
    assert [await b.recv() for _ in msgs] == msgs
    await b.send(b"back")
    assert [m async for m in _take(a, 1)] == [b"back"]
    await a.close()
    with pytest.raises(swsrs.PeerGone) as exc:
        await b.recv()
    assert exc.value.code == 1000
    await b.close()


async def _take(conn: swsrs.Connection, n: int) -> Any:
    async for m in conn:
        yield m
        n -= 1
        if not n:
            return


async def test_stream_view_and_open_stream(relay: Relay) -> None:
    async with swsrs.AdminClient(relay.url) as admin:
        s = await admin.create()
    a, b = await both(relay, s)
    blob = os.urandom(8 * 1024 * 1024)
    reader, writer = await b.open_stream()

    async def push() -> None:
        for i in range(0, len(blob), 100_000):
            await a.write(blob[i : i + 100_000])

    async def pull() -> bytes:
        return await reader.readexactly(len(blob))

    _, got = await asyncio.gather(push(), pull())
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    writer.write(b"reply over a real StreamWriter")
    await writer.drain()
    assert await a.readexactly(30) == b"reply over a real StreamWriter"
    writer.close()
    assert await a.read() == b""  # the stream closing ends the tunnel
    await a.close()


async def test_typed_errors(relay: Relay) -> None:
    async with swsrs.AdminClient(relay.url) as admin:
        s = await admin.create()
    with pytest.raises(swsrs.NotFound):
        await swsrs.dial(relay.url, "no-such-session", s.initiator_token)
    with pytest.raises(swsrs.Unauthorized):
        await swsrs.dial(relay.url, s.id, "not-the-token")
    a = await swsrs.dial(relay.url, s.id, s.initiator_token)
    with pytest.raises(swsrs.SlotTaken):
        await swsrs.dial(relay.url, s.id, s.initiator_token)
    await a.close()
    from .conftest import free_port

    with pytest.raises(swsrs.RelayUnreachable):
        await swsrs.dial(f"http://127.0.0.1:{free_port()}", s.id, s.initiator_token)
    # A server that accepts TCP but never answers the handshake.
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(swsrs.HandshakeTimeout):
            await swsrs.dial(
                f"http://127.0.0.1:{srv.getsockname()[1]}", s.id, "x", handshake_timeout=0.5
            )
    finally:
        srv.close()


def test_open_socket_for_blocking_code(relay: Relay) -> None:
    s = relay.create()
    left = swsrs.open_socket(relay.url, s["id"], s["initiator_token"], role="initiator")
    right = swsrs.open_socket(relay.url, s["id"], s["responder_token"])
    blob = os.urandom(3 * 1024 * 1024)
    left.sendall(blob)
    got = bytearray()
    right.settimeout(30)
    while len(got) < len(blob):
        got += right.recv(1 << 20)
    assert bytes(got) == blob
    left.close()
    assert right.recv(10) == b""  # closing one socket ends the tunnel
    right.close()
    with pytest.raises(swsrs.NotFound):
        swsrs.open_socket(relay.url, "gone", "x")

"""The relay process against an independent client (the ``websockets`` library) and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
from typing import Any

import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from swsrs.wire.frames import apply_mask, frame_header

from .conftest import Relay

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def attach(
    relay: Relay, sid: str, token: str, *, query: bool = False, **kw: Any
) -> ClientConnection:
    url = f"{relay.ws_url}/relay/{sid}"
    if query:
        return await connect(f"{url}?token={token}", max_size=None, **kw)
    return await connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, **kw
    )


async def pair(relay: Relay) -> tuple[dict[str, Any], ClientConnection, ClientConnection]:
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"])
    return s, a, b


async def old_tokens_still_work(relay: Relay, s: dict[str, Any], before: dict[str, Any]) -> None:
    """After a restart on a persistent store: same session, and its tokens open their slots."""
    after = relay.status(s["id"])
    assert after is not None
    for k in ("id", "created_at", "expires_at"):
        assert after[k] == before[k]
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"], query=True)
    await a.send(b"the old tokens still open their slots")
    assert await b.recv() == b"the old tokens still open their slots"
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")
    assert relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    async with asyncio.timeout(15):
        with pytest.raises(websockets.ConnectionClosed) as exc:
            while True:
                await ws.recv()
    rcvd = exc.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, None)


async def raw_open(
    relay: Relay, path: str, token: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    w.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    return r, w, head


def masked(fin: bool, opcode: int, payload: bytes, *, rsv: int = 0, mask: bool = True) -> bytes:
    key = os.urandom(4)
    head = bytearray(frame_header(fin, opcode, len(payload), key if mask else None))
    head[0] |= rsv
    return bytes(head) + (apply_mask(payload, key) if mask else payload)


async def read_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await r.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await r.readexactly(8))
    return b0 & 0x0F, await r.readexactly(n)


async def read_close(r: asyncio.StreamReader) -> int:
    """Read server frames until a close; return its code."""
    async with asyncio.timeout(10):
        while True:
            opcode, payload = await read_frame(r)
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])


# -- admin API ---------------------------------------------------------------------


def test_admin_create_get_list_delete(relay: Relay) -> None:
    s = relay.create()
    assert set(s) == {"id", "initiator_token", "responder_token", "created_at", "expires_at"}
    for k in ("id", "initiator_token", "responder_token"):
        assert TOKEN_RE.match(s[k]), s[k]
    assert RFC3339.match(s["created_at"]) and RFC3339.match(s["expires_at"])
    st = relay.status(s["id"])
    assert st is not None
    assert set(st) == {
        "id", "state", "created_at", "expires_at", "last_activity",
        "bytes_in", "bytes_out", "initiator_connected", "responder_connected",
    }  # fmt: skip
    assert st["state"] == "pending" and st["bytes_in"] == 0 and st["bytes_out"] == 0
    assert st["initiator_connected"] is False and st["responder_connected"] is False
    code, _, body = relay.request("GET", "/admin/sessions")
    assert code == 200
    listed = json.loads(body)["sessions"]
    assert [x["id"] for x in listed] == [s["id"]]
    assert s["initiator_token"] not in body.decode() and s["responder_token"] not in body.decode()
    assert relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert relay.request("GET", f"/admin/sessions/{s['id']}")[0] == 404
    assert relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 404
    assert relay.request("GET", "/admin/sessions/nope")[0] == 404


def test_public_base_url_fields(relay_factory: Any) -> None:
    r = relay_factory("--public-base-url", "https://relay.example.com/")
    s = r.create()
    assert s["initiator_url"] == s["responder_url"] == f"wss://relay.example.com/relay/{s['id']}"


def test_healthz_and_discovery_under_no_auth(relay: Relay) -> None:
    assert relay.request("GET", "/healthz")[::2] == (200, b"ok")
    code, _, body = relay.request("GET", "/.well-known/swsrs-config")
    assert code == 404
    assert body.decode().strip() == "auth disabled on this deployment (--no-auth)"


# -- refusals before the upgrade ---------------------------------------------------------


async def test_refusals_before_upgrade(relay: Relay) -> None:
    s = relay.create()
    sid = s["id"]
    for token, path, want in [
        (s["initiator_token"], "/relay/unknown-session", b" 404 "),
        (None, f"/relay/{sid}", b" 401 "),
        ("wrong-token", f"/relay/{sid}", b" 401 "),
    ]:
        _, w, head = await raw_open(relay, path, token)
        assert want in head.split(b"\r\n")[0], head
        w.close()
    a = await attach(relay, sid, s["initiator_token"], query=True)
    with pytest.raises(websockets.InvalidStatus) as exc:
        await attach(relay, sid, s["initiator_token"])
    assert exc.value.response.status_code == 409
    st = relay.status(sid)
    assert st and st["initiator_connected"] and not st["responder_connected"]
    # A plain GET with a valid token but no upgrade headers.
    code, _, body = relay.request("GET", f"/relay/{sid}?token={s['responder_token']}")
    assert code == 400, body
    await a.close()


def upgrade_head(sid: str, token: str, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /relay/{sid}?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


async def test_upgrade_on_a_reused_keepalive_connection(relay: Relay) -> None:
    """A client may send its upgrade on a connection that already carried a plain request."""
    s = relay.create()
    b = await attach(relay, s["id"], s["responder_token"])
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert b" 200 " in head.split(b"\r\n")[0]
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    assert await r.readexactly(length) == b"ok"
    w.write(upgrade_head(s["id"], s["initiator_token"]))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in head.split(b"\r\n")[0], head
    w.write(masked(True, 2, b"over a reused connection"))
    assert await b.recv() == b"over a reused connection"
    await b.send("back")
    assert await read_frame(r) == (1, b"back")
    w.write(masked(True, 8, struct.pack("!H", 1000)))
    assert await read_close(r) == 1000
    assert await closed_with(b) == (1000, "peer disconnected")
    w.close()


async def test_frames_pipelined_with_the_upgrade_are_kept(relay: Relay) -> None:
    s = relay.create()
    b = await attach(relay, s["id"], s["responder_token"])
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(upgrade_head(s["id"], s["initiator_token"]) + masked(True, 2, b"early") * 3)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in head
    for _ in range(3):
        assert await b.recv() == b"early"
    w.close()
    await closed_with(b)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /relay/x HTTP/1.1\r\nBad Header Line\r\n\r\n", b" 400 "),
        (b"GET /relay/x HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n\r\n", b" 431 "),
        (b"GET /relay/ HTTP/1.1\r\nHost: x\r\n\r\n", b" 404 "),
        (b"GET /relay/a/b HTTP/1.1\r\nHost: x\r\n\r\n", b" 404 "),
        (b"POST /relay/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b" 405 "),
        (b"GARBAGE\r\n\r\n", b" 400 "),
    ],
)
async def test_malformed_requests_get_a_status_and_the_relay_lives(
    relay: Relay, data: bytes, status: bytes
) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(data)
    head = await asyncio.wait_for(r.readuntil(b"\r\n"), 10)
    assert status in head, head
    w.close()
    assert relay.request("GET", "/healthz")[0] == 200


# -- states, forwarding, counters ------------------------------------------------------------


async def test_states_and_reattach(relay: Relay) -> None:
    s = relay.create()
    sid = s["id"]
    a = await attach(relay, sid, s["initiator_token"])
    assert relay.status(sid)["state"] == "half_open"  # type: ignore[index]
    b = await attach(relay, sid, s["responder_token"], query=True)
    assert relay.status(sid)["state"] == "open"  # type: ignore[index]
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")
    relay.wait_status(sid, lambda st: st["state"] == "pending")
    a = await attach(relay, sid, s["initiator_token"])
    b = await attach(relay, sid, s["responder_token"])
    await a.send(b"again")
    assert await b.recv() == b"again"
    await a.close()
    await b.close()


async def test_forwarding_types_boundaries_order_counters(relay: Relay) -> None:
    s, a, b = await pair(relay)
    sent_in = sent_out = 0
    msgs: list[bytes | str] = [b"", "", b"\x00\xff", "héllo ✓", os.urandom(20 * 1024 * 1024)]
    msgs += [os.urandom(i % 300) for i in range(3000)]
    for m in msgs:
        await a.send(m)
        sent_in += len(m.encode() if isinstance(m, str) else m)
    for m in msgs:
        got = await b.recv()
        assert type(got) is type(m) and got == m
    # Fragmented message (websockets sends an iterable as fragments) with pings between.
    await b.send([b"frag-", b"men", b"ted"])
    await b.ping(b"p1")
    await b.send(["a", "b"])
    assert await a.recv() == b"frag-mented"
    assert await a.recv() == "ab"
    sent_out += len(b"frag-mented") + 2
    # Both directions at once.
    blob = os.urandom(5 * 1024 * 1024)

    async def send_all(ws: ClientConnection) -> None:
        for i in range(0, len(blob), 65536):
            await ws.send(blob[i : i + 65536])

    async def recv_all(ws: ClientConnection) -> bytes:
        out = bytearray()
        while len(out) < len(blob):
            out += await ws.recv()  # type: ignore[operator]
        return bytes(out)

    _, _, ra, rb = await asyncio.gather(send_all(a), send_all(b), recv_all(a), recv_all(b))
    assert ra == blob and rb == blob
    sent_in += len(blob)
    sent_out += len(blob)
    st = relay.status(s["id"])
    assert st and st["bytes_in"] == sent_in and st["bytes_out"] == sent_out
    await a.close()
    await b.close()


async def test_early_data_delivered_on_pairing(relay: Relay) -> None:
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    await a.send(b"sent before the responder existed")
    await a.send("and text")
    b = await attach(relay, s["id"], s["responder_token"])
    assert await b.recv() == b"sent before the responder existed"
    assert await b.recv() == "and text"
    await a.close()
    await b.close()


# -- closing -------------------------------------------------------------------------------------


async def test_abrupt_drop_closes_other(relay: Relay) -> None:
    s, a, b = await pair(relay)
    a.transport.abort()
    assert await closed_with(b) == (1000, "peer disconnected")
    relay.wait_status(s["id"], lambda st: st["state"] == "pending")


async def test_delete_disconnects_peers(relay: Relay) -> None:
    s, a, b = await pair(relay)
    assert relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert (await closed_with(a))[0] == 1000
    assert (await closed_with(b))[0] == 1000
    assert relay.status(s["id"]) is None


async def test_ttl_expiry_disconnects_peers(relay_factory: Any) -> None:
    relay = relay_factory("--session-ttl", "2s", "--reap-interval", "1s")
    s, a, b = await pair(relay)
    assert (await closed_with(a)) == (1001, "session expired")
    assert (await closed_with(b)) == (1001, "session expired")
    assert relay.status(s["id"]) is None
    with pytest.raises(websockets.InvalidStatus) as exc:
        await attach(relay, s["id"], s["initiator_token"])
    assert exc.value.response.status_code == 404
    idle = relay.create()  # nobody attached: the reaper removes it
    relay.wait_status(idle["id"], lambda st: st is None)


async def test_peer_wait(relay_factory: Any) -> None:
    relay = relay_factory("--peer-wait", "1s")
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    code, reason = await closed_with(a)
    assert code == 1001 and reason and "did not attach" in reason
    relay.wait_status(s["id"], lambda st: st["state"] == "pending")


async def test_drop_mid_frame_releases_everyone(relay: Relay) -> None:
    s = relay.create()
    b = await attach(relay, s["id"], s["responder_token"])
    _, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert b" 101 " in head
    key = os.urandom(4)
    w.write(frame_header(True, 2, 1 << 20, key) + apply_mask(os.urandom(1000), key))
    await w.drain()
    w.transport.abort()
    async with asyncio.timeout(10):
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await b.recv()
    relay.wait_status(s["id"], lambda st: st["state"] == "pending")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked(True, 2, b"x", mask=False), 1002),  # unmasked client frame
        (masked(True, 2, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (masked(True, 3, b"x"), 1002),  # unknown opcode
        (masked(True, 0, b"x"), 1002),  # continuation without a start
        (masked(False, 9, b"x"), 1002),  # fragmented control frame
        (masked(True, 8, b"\x03"), 1002),  # close with a 1-byte payload
    ],
)
async def test_protocol_errors(relay: Relay, frame: bytes, code: int) -> None:
    s = relay.create()
    b = await attach(relay, s["id"], s["responder_token"])
    r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert b" 101 " in head
    w.write(frame)
    assert await read_close(r) == code
    assert await closed_with(b) == (1000, "peer disconnected")
    w.close()


async def test_max_frame_size(relay_factory: Any) -> None:
    relay = relay_factory("--max-frame-size", "1024")
    _s, a, b = await pair(relay)
    await a.send(b"x" * 1024)
    assert await b.recv() == b"x" * 1024
    await a.send(b"y" * 1025)
    assert (await closed_with(a))[0] == 1009
    assert await closed_with(b) == (1000, "peer disconnected")
    _, a, b = await pair(relay)
    await a.send([b"z" * 600, b"z" * 600])  # fragments add up past the cap
    assert (await closed_with(a))[0] == 1009


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_closes_peers_with_1001(relay_factory: Any, sig: int) -> None:
    relay = relay_factory()
    _, a, b = await pair(relay)
    relay.proc.send_signal(sig)
    assert (await closed_with(a))[0] == 1001
    assert (await closed_with(b))[0] == 1001
    assert await asyncio.to_thread(relay.proc.wait, 15) == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", relay.port)


async def test_logs_never_contain_tokens(relay: Relay) -> None:
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"], query=True)
    b = await attach(relay, s["id"], s["responder_token"], query=True)
    await a.send(b"hi")
    await b.recv()
    await a.close()
    await closed_with(b)
    relay.stop()
    log = relay.log()
    assert "attach session=" in log and "detach session=" in log
    assert s["initiator_token"] not in log and s["responder_token"] not in log


# -- backpressure --------------------------------------------------------------------------------


async def test_backpressure_stalled_reader_keeps_relay_memory_flat(relay: Relay) -> None:
    """A reader that stops reading slows the writer; 200 MiB cross with flat relay RSS."""
    proc = psutil.Process(relay.proc.pid)
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    # The reader is a raw socket so that nothing on our side buffers for it.
    r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["responder_token"])
    assert b" 101 " in head
    rss_before = proc.memory_info().rss
    chunk = os.urandom(64 * 1024)
    total = 200 * 1024 * 1024
    sent = 0
    digest_out = hashlib.sha256()

    async def writer() -> None:
        nonlocal sent
        while sent < total:
            await a.send(chunk)
            digest_out.update(chunk)
            sent += len(chunk)

    wt = asyncio.create_task(writer())
    await asyncio.sleep(3)  # the reader reads nothing meanwhile
    stalled_at = sent
    assert stalled_at < 64 * 1024 * 1024, (
        f"{stalled_at} bytes accepted while the reader was stalled"
    )
    rss_stalled = proc.memory_info().rss
    # Now read everything: parse server frames (unmasked), hash the payload.
    digest_in = hashlib.sha256()
    got = 0
    async with asyncio.timeout(120):
        while got < total:
            _, b1 = await r.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await r.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await r.readexactly(8))
            payload = await r.readexactly(n)
            digest_in.update(payload)
            got += n
    await wt
    assert digest_in.hexdigest() == digest_out.hexdigest()
    rss_after = proc.memory_info().rss
    growth = max(rss_stalled, rss_after) - rss_before
    assert growth < 64 * 1024 * 1024, f"relay RSS grew by {growth / 2**20:.1f} MiB"
    await a.close()
    w.close()


# -- clients that do not read ------------------------------------------------------------------


async def test_a_ping_flood_from_a_client_that_never_reads_keeps_memory_flat(relay: Relay) -> None:
    """Pongs stop while the client does not read them; the relay's memory stays flat."""
    proc = psutil.Process(relay.proc.pid)
    s = relay.create()
    _r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert b" 101 " in head
    rss_before = proc.memory_info().rss
    ping = masked(True, 0x9, b"p" * 125)
    sent = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline and sent < 300 * 1024 * 1024:
        w.write(ping * 4096)
        sent += len(ping) * 4096
        try:
            await asyncio.wait_for(w.drain(), 1)
        except TimeoutError:
            break  # the relay stopped reading us: backpressure, fine too
    growth = proc.memory_info().rss - rss_before
    assert growth < 64 * 1024 * 1024, f"relay RSS grew by {growth / 2**20:.1f} MiB ({sent} B sent)"
    w.transport.abort()


async def test_a_closing_client_that_never_reads_is_cut_and_frees_its_slot(relay: Relay) -> None:
    """A client sends its close frame but never reads our queued bytes nor our answer:
    the relay does not wait for it forever (asyncio's close waits for the buffer)."""
    proc = psutil.Process(relay.proc.pid)
    s = relay.create()
    _r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert b" 101 " in head
    w.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a_port = w.transport.get_extra_info("sockname")[1]
    _rb, wb, head = await raw_open(relay, f"/relay/{s['id']}", s["responder_token"])
    assert b" 101 " in head
    wb.write(masked(True, 2, os.urandom(1 << 20)) * 24)  # more than all the buffers on the way
    await asyncio.sleep(1)
    w.write(masked(True, 0x8, struct.pack("!H", 1000)))
    await w.drain()
    relay.wait_status(s["id"], lambda st: not st["initiator_connected"])

    def held() -> bool:
        return any(c.raddr and c.raddr.port == a_port for c in proc.net_connections("tcp"))

    async with asyncio.timeout(30):  # CLOSE_TIMEOUT is 5 s
        while held():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    w.transport.abort()
    wb.transport.abort()


async def test_a_half_closed_client_releases_its_slot_at_once(relay: Relay) -> None:
    s = relay.create()
    _r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert b" 101 " in head
    b = await attach(relay, s["id"], s["responder_token"])
    w.write_eof()  # FIN without a close frame, and never read again
    assert await closed_with(b) == (1000, "peer disconnected")
    relay.wait_status(s["id"], lambda st: st["state"] == "pending")
    w.close()

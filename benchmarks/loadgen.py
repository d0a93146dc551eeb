"""The client side of the benchmarks: raw sockets, prebuilt frames, no per-byte Python work.

Blocking sockets and threads for the streaming workloads (bulk, small
messages, ping-pong, pairing latency): ``sendall`` of prebuilt batches and
``recv_into`` a reusable buffer release the GIL, so the client costs about
what the kernel copies cost. asyncio with raw non-blocking sockets for the
workloads that hold or churn many connections (idle pairs, session creation,
50 pairings at once).

Nothing here imports swsrs: the frames are built from RFC 6455 directly, so
the suite measures any relay that speaks the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MiB = 1024 * 1024
GiB = 1024 * MiB
TIMEOUT = 60.0  # no single wait in a benchmark may take longer

# -- frames ----------------------------------------------------------------------------------


def frame_header(length: int, opcode: int = 0x2, mask: bytes | None = None) -> bytes:
    """A FIN frame header; masked (client to server) when ``mask`` is given."""
    mbit = 0x80 if mask else 0
    b0 = 0x80 | opcode
    if length < 126:
        head = struct.pack("!BB", b0, mbit | length)
    elif length < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, length)
    return head + mask if mask else head


def _xor(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def masked_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return frame_header(len(payload), mask=mask) + _xor(payload, mask)


# What a sender writes and a receiver reads per message, by the kind of path:
#   "server": through a relay (masked in, unmasked out)
#   "masked": direct WebSocket, the masked frames arrive as sent
#   "raw":    TCP, no framing
def sent_message(kind: str, payload: bytes) -> bytes:
    return payload if kind == "raw" else masked_frame(payload)


def received_len(kind: str, size: int) -> int:
    if kind == "raw":
        return size
    if kind == "masked":
        return len(frame_header(size, mask=b"\0\0\0\0")) + size
    return len(frame_header(size)) + size


# -- connections -----------------------------------------------------------------------------


def upgrade_request(port: int, path: str, token: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Upgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_head(s: socket.socket) -> bytes:
    """Read an HTTP response head; return the bytes read past it. Raises unless it is a 101."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("handshake: connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:60]!r}")
    return rest


def ws_open(port: int, path: str, token: str | None) -> tuple[socket.socket, bytes]:
    """A raw WebSocket client handshake; returns the socket and any bytes read past the head."""
    s = connect(port)
    s.sendall(upgrade_request(port, path, token))
    return s, read_head(s)


def hard_close(s: socket.socket) -> None:
    """Close with RST: no TIME_WAIT left behind by thousands of benchmark connections."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@dataclass
class Link:
    """Two connected client endpoints of one path (through a relay, or not)."""

    a: socket.socket
    b: socket.socket
    kind: str  # "server", "masked" or "raw" (see ``sent_message``)
    pre_a: bytes = b""
    pre_b: bytes = b""
    on_close: Callable[[], None] | None = None

    def close(self) -> None:
        hard_close(self.a)
        hard_close(self.b)
        if self.on_close is not None:
            self.on_close()


# -- streaming workloads ---------------------------------------------------------------------


def _sender(s: socket.socket, batch: bytes, batches: int, errors: list[BaseException]) -> None:
    try:
        for _ in range(batches):
            s.sendall(batch)
    except BaseException as exc:
        errors.append(exc)


def _receiver(s: socket.socket, got: int, expect: int, errors: list[BaseException]) -> None:
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    try:
        while got < expect:
            n = s.recv_into(view)
            if not n:
                raise RuntimeError(f"receiver closed after {got} of {expect} bytes")
            got += n
    except BaseException as exc:
        errors.append(exc)


@dataclass
class Stream:
    """``count`` messages of ``size`` bytes, sent as prebuilt batches of about 1 MiB."""

    size: int
    count: int
    kind: str
    batch: bytes = field(init=False)
    batches: int = field(init=False)

    def __post_init__(self) -> None:
        per_batch = max(1, MiB // (self.size + 14))
        self.batches = max(1, self.count // per_batch)
        self.count = self.batches * per_batch
        payload = os.urandom(self.size)
        self.batch = sent_message(self.kind, payload) * per_batch

    @property
    def expect(self) -> int:
        return self.count * received_len(self.kind, self.size)

    @property
    def payload(self) -> int:
        return self.count * self.size


def transfer(links: list[Link], stream: Stream, both_ways: bool = False) -> float:
    """Send ``stream`` over every link (a→b, and b→a too if ``both_ways``); return wall seconds."""
    errors: list[BaseException] = []
    threads = []
    senders = []
    for ln in links:
        ends = [(ln.a, ln.b, ln.pre_b)]
        if both_ways:
            ends.append((ln.b, ln.a, ln.pre_a))
        for src, dst, pre in ends:
            recv_args = (dst, len(pre), stream.expect, errors)
            threads.append(threading.Thread(target=_receiver, args=recv_args))
            send_args = (src, stream.batch, stream.batches, errors)
            senders.append(threading.Thread(target=_sender, args=send_args))
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    for t in senders:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for t in senders:
        t.join()
    if errors:
        raise errors[0]
    return wall


def _recv_exact(s: socket.socket, n: int, buf: memoryview) -> None:
    while n:
        got = s.recv_into(buf, n)
        if not got:
            raise RuntimeError("connection closed")
        n -= got


def ping_pong(link: Link, size: int, count: int) -> list[float]:
    """A sends a message, B echoes it back, A waits: ``count`` round trips, seconds each."""
    if link.pre_a or link.pre_b:
        raise RuntimeError("unexpected bytes before the first message")
    payload = os.urandom(size)
    msg_a = sent_message(link.kind, payload)
    msg_b = sent_message(link.kind, payload)
    n = received_len(link.kind, size)
    buf = memoryview(bytearray(n))
    a, b = link.a, link.b
    times = []
    clock = time.perf_counter
    for _ in range(count):
        t0 = clock()
        a.sendall(msg_a)
        _recv_exact(b, n, buf)
        b.sendall(msg_b)
        _recv_exact(a, n, buf)
        times.append(clock() - t0)
    return times


# -- asyncio: many connections ---------------------------------------------------------------


class AdminClient:
    """``POST /admin/sessions`` over K keep-alive HTTP/1.1 connections, raw sockets.

    Cheaper per request than any HTTP client library, so the relay, not the
    client, sets the pace.
    """

    def __init__(self, port: int, concurrency: int = 16) -> None:
        self.port = port
        self.concurrency = concurrency
        self.request = (
            f"POST /admin/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    async def _conn_loop(self, todo: list[int], results: list[tuple[str, str, str]] | None) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while todo:
                todo.pop()
                w.write(self.request)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), TIMEOUT)
                if not head.startswith(b"HTTP/1.1 201"):
                    raise RuntimeError(f"create: {head[:60]!r}")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await asyncio.wait_for(r.readexactly(length), TIMEOUT)
                if results is not None:
                    s = json.loads(body)
                    results.append((s["id"], s["initiator_token"], s["responder_token"]))
        finally:
            w.close()

    async def create(self, n: int, keep: bool = True) -> list[tuple[str, str, str]]:
        """Create ``n`` sessions; return (id, initiator token, responder token) each if ``keep``."""
        todo = list(range(n))
        results: list[tuple[str, str, str]] | None = [] if keep else None
        await asyncio.gather(
            *(self._conn_loop(todo, results) for _ in range(min(self.concurrency, n)))
        )
        return results or []


async def aws_open(port: int, path: str, token: str | None) -> socket.socket:
    """An asyncio raw WebSocket handshake on a plain non-blocking socket."""
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, ("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_sendall(s, upgrade_request(port, path, token))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await loop.sock_recv(s, 4096)
            if not chunk:
                raise RuntimeError("handshake: connection closed")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {buf[:60]!r}")
    except BaseException:
        hard_close(s)
        raise
    return s


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """No cyclic GC in the client while it holds thousands of sockets and tasks.

    A full collection walks every live object; with 20k connections open that
    makes the client, not the relay, the slow side.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def open_pairs(
    port: int, paths: list[tuple[str, str | None, str | None]], concurrency: int = 100
) -> list[socket.socket]:
    """Attach both peers of every (path, token A, token B); return all sockets, held open."""
    sem = asyncio.Semaphore(concurrency)
    socks: list[socket.socket] = []

    async def one(path: str, ta: str | None, tb: str | None) -> None:
        async with sem:
            socks.append(await aws_open(port, path, ta))
            socks.append(await aws_open(port, path, tb))

    try:
        with no_gc():
            await asyncio.wait_for(asyncio.gather(*(one(*p) for p in paths)), TIMEOUT * 3)
    except BaseException:
        for s in socks:
            hard_close(s)
        raise
    return socks


ONE_BYTE = masked_frame(b"x")


async def pair_once(port: int, path: str, ta: str | None, tb: str | None) -> float:
    """A attaches; B attaches and sends one byte; A receives it. Returns the pairing latency.

    The latency runs from B's upgrade request (its TCP connection is already
    open) to A holding the byte: upgrade, pairing and one forward.
    """
    loop = asyncio.get_running_loop()
    a = await aws_open(port, path, ta)
    b = socket.socket()
    b.setblocking(False)
    try:
        await loop.sock_connect(b, ("127.0.0.1", port))
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        await loop.sock_sendall(b, upgrade_request(port, path, tb))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await asyncio.wait_for(loop.sock_recv(b, 4096), TIMEOUT)
            if not chunk:
                raise RuntimeError("handshake: connection closed")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {buf[:60]!r}")
        await loop.sock_sendall(b, ONE_BYTE)
        got = b""
        while len(got) < 3:
            chunk = await asyncio.wait_for(loop.sock_recv(a, 16), TIMEOUT)
            if not chunk:
                raise RuntimeError("A closed before the byte arrived")
            got += chunk
        return time.perf_counter() - t0
    finally:
        hard_close(a)
        hard_close(b)


async def pair_many(
    port: int, paths: list[tuple[str, str | None, str | None]], concurrency: int
) -> list[float]:
    """``pair_once`` for every path, ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(p: tuple[str, str | None, str | None]) -> float:
        async with sem:
            return await pair_once(port, *p)

    with no_gc():
        return await asyncio.wait_for(asyncio.gather(*(one(p) for p in paths)), TIMEOUT * 3)

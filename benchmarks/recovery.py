"""W10: how long a resumable tunnel takes to carry bytes again after its connections are cut.

Two SDK ends (``reconnect=``) attach through a TCP forwarder in this process;
one echoes. Each round resets every connection through the forwarder (RST,
as a Wi-Fi change or a crashed middlebox would), then times one echo round
trip: detection of the cut, reattaching, pairing, the resume exchange and
the round trip itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import swsrs


class Forwarder:
    """127.0.0.1:port → the relay; :meth:`cut` resets every connection open through it."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            w.transport.abort()
            return
        self._open |= {w, uw}
        pumps = [asyncio.ensure_future(self._pump(r, uw)), asyncio.ensure_future(self._pump(ur, w))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for t in pumps:
            t.cancel()
        for s in (w, uw):
            self._open.discard(s)
            s.transport.abort()

    @staticmethod
    async def _pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()

    def cut(self) -> None:
        for s in list(self._open):
            sock = s.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.transport.abort()
        self._open.clear()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def cut_and_measure(
    relay_port: int, create: Callable[[], tuple[str, str | None, str | None]], cuts: int
) -> list[float]:
    """Seconds from each cut to the first echo round trip completed after it."""
    path, ti, tr = create()
    assert ti is not None and tr is not None
    sid = path.rsplit("/", 1)[1]
    fwd = Forwarder(relay_port)
    await fwd.start()
    url = f"http://127.0.0.1:{fwd.port}"
    acc = asyncio.ensure_future(swsrs.accept(url, sid, tr, reconnect=60))
    a = await swsrs.dial(url, sid, ti, reconnect=60)
    b = await acc

    async def echo() -> None:
        with contextlib.suppress(swsrs.PeerGone):
            while True:
                await b.send(await b.recv())

    echoing = asyncio.ensure_future(echo())
    times: list[float] = []
    try:
        await a.send(b"warm")
        await a.recv()
        for _ in range(cuts):
            fwd.cut()
            t0 = time.perf_counter()
            await a.send(b"x")
            await a.recv()
            times.append(time.perf_counter() - t0)
    finally:
        echoing.cancel()
        await a.close()
        await b.close()
        fwd.close()
    return times

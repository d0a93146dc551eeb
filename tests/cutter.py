"""A TCP proxy for tests that cuts every connection through it after so many bytes.

It stands between the peers and the relay on 127.0.0.1: each accepted
connection is joined to the relay, and whenever ``cut_every`` more bytes
have crossed the proxy (both directions, all connections together), every
connection open at that moment is reset (RST), as a Wi-Fi change or a
crashed middlebox would do.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Cutter:
    def __init__(self, upstream_port: int, cut_every: int) -> None:
        self.upstream_port = upstream_port
        self.cut_every = cut_every
        self.port = 0
        self.cuts = 0
        self.accepted = 0
        self._moved = 0
        self._socks: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            w.close()
            return
        self._socks |= {w, uw}
        pumps = {asyncio.ensure_future(self._pump(r, uw)), asyncio.ensure_future(self._pump(ur, w))}
        # Both directions end together: one side gone means the whole connection is.
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for t in pumps:
            t.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for s in (w, uw):
            self._socks.discard(s)
            s.transport.abort()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(64 * 1024):
            w.write(data)
            await w.drain()
            self._moved += len(data)
            if self._moved >= self.cut_every:
                self._moved = 0
                self._cut_all()

    def _cut_all(self) -> None:
        self.cuts += 1
        for s in list(self._socks):
            sock = s.get_extra_info("socket")
            if sock is not None:  # RST, not FIN: the other end sees a reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.transport.abort()
        self._socks.clear()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextmanager
def cutter(upstream_port: int, cut_every: int) -> Iterator[Cutter]:
    c = Cutter(upstream_port, cut_every)
    c.start()
    try:
        yield c
    finally:
        c.stop()

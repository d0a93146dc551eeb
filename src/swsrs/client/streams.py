"""A tunnel as asyncio streams, and the pipe between a tunnel and any stream pair."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from swsrs.client.connection import Connection
from swsrs.errors import PeerGone

READ_SIZE = 256 * 1024


async def pipe(
    conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Copy bytes both ways until either side ends, then close both.

    The relay protocol has no half-close, so the first end (EOF on the
    stream, or the tunnel closing) ends the whole pipe. Nothing read before
    that end is lost: a tunnel close arrives after every message the far side
    sent, and bytes read before EOF are sent before the tunnel is closed.
    """

    async def up() -> None:  # stream -> tunnel
        while data := await reader.read(READ_SIZE):
            await conn.send(data)

    async def down() -> None:  # tunnel -> stream
        while True:
            try:
                msg = await conn.recv()
            except PeerGone:
                return
            writer.write(msg.encode() if isinstance(msg, str) else msg)
            await writer.drain()

    tasks = {asyncio.ensure_future(up()), asyncio.ensure_future(down())}
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            exc = t.exception()
            if exc is not None and not isinstance(exc, (PeerGone, ConnectionError)):
                raise exc
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await conn.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def open_stream(conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A real ``StreamReader``/``StreamWriter`` pair whose bytes cross ``conn``.

    The streams sit on one end of a socketpair and :func:`pipe` pumps the
    other end, so flow control is the kernel's and every asyncio-stream API
    works (``readexactly``, ``readuntil``, ``drain``, ``write_eof`` = end).
    """
    user_end, pump_end = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=pump_end, limit=READ_SIZE)
    task = asyncio.get_running_loop().create_task(pipe(conn, reader, writer))
    streams = await asyncio.open_connection(sock=user_end, limit=READ_SIZE)
    _PUMPS.add(task)
    task.add_done_callback(_PUMPS.discard)
    return streams


_PUMPS: set[asyncio.Task[None]] = set()  # keep pump tasks alive while they run

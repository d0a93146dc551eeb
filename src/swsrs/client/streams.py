"""A tunnel as asyncio streams, and the pipe between a tunnel and any stream pair."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from swsrs.errors import PeerGone, os_reason
from swsrs.peer import Ended

if TYPE_CHECKING:
    from swsrs.client.connection import Connection

READ_SIZE = 256 * 1024


async def drive(
    conn: Connection,
    up: Callable[[], Awaitable[None]],
    down: Callable[[], Awaitable[None]],
) -> Ended:
    """Run the two directions of an adapter over ``conn`` until the tunnel ends; close it.

    ``up`` (local input → tunnel) starts only once the other side is there;
    ``down`` (tunnel → local output) acknowledges what it delivers, so
    automatic acknowledgement is turned off. After a clean end ``down`` may
    finish writing; after any other end both are cancelled. A direction that
    dies of a bug fails the tunnel (the other side is told), then the bug is
    raised here.
    """
    conn.auto_ack = False
    try:
        await conn.wait_paired()
    except PeerGone:
        await conn.close()
        return conn.ended or Ended(False, "the tunnel closed")
    tasks = (asyncio.ensure_future(up()), asyncio.ensure_future(down()))
    for t in tasks:
        t.add_done_callback(lambda t: _failed_by_bug(conn, t))
    try:
        ended = await conn.wait_ended()
        if ended.ok:
            await asyncio.wait({tasks[1]})
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()
    for t in tasks:
        if not t.cancelled() and (exc := t.exception()) is not None:
            raise exc
    return conn.ended or ended


def _failed_by_bug(conn: Connection, task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        conn.fail(f"internal error: {exc!r}")


async def pipe(
    conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Ended:
    """Copy bytes both ways between ``conn`` and a stream pair; return how the tunnel ended.

    Nothing is read from ``reader`` before the other side is there. Each
    direction ends on its own: EOF on ``reader`` becomes the other side's
    end-of-stream, and the other side's end-of-stream becomes ``write_eof``
    once every byte is written (a half-close, as ``nc -N`` and socat do).
    With a raw counterpart the first end ends both, as the reference does.
    On a failed end the stream is aborted (a reset, not a clean EOF), so the
    program on it cannot mistake a cut for the end of the data.
    """
    try:
        ended = await drive(conn, lambda: _up(conn, reader), lambda: _down(conn, writer))
    except BaseException:
        writer.transport.abort()
        raise
    if ended.ok:
        writer.close()
    else:
        writer.transport.abort()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return ended


async def _up(conn: Connection, reader: asyncio.StreamReader) -> None:
    """stream -> tunnel, then our end-of-stream."""
    try:
        while data := await reader.read(READ_SIZE):
            await conn.send(data)
        await conn.write_eof()
    except PeerGone:
        return  # the tunnel is over; its end says why
    except OSError as exc:
        conn.fail(f"reading the local connection failed: {os_reason(exc)}")


async def _down(conn: Connection, writer: asyncio.StreamWriter) -> None:
    """tunnel -> stream; at the other side's end-of-stream, flush and half-close."""
    try:
        while True:
            try:
                msg = await conn.recv()
            except PeerGone as exc:
                if not exc.clean:
                    return
                break
            writer.write(msg.encode() if isinstance(msg, str) else msg)
            await writer.drain()
            await conn.ack(len(msg))
        # Everything is handed to the kernel before the end is confirmed.
        writer.transport.set_write_buffer_limits(0)
        await writer.drain()
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
        await conn.ack_eof()
    except OSError as exc:
        conn.fail(f"writing to the local connection failed: {os_reason(exc)}")


async def open_stream(conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A real ``StreamReader``/``StreamWriter`` pair whose bytes cross ``conn``.

    The streams sit on one end of a socketpair and :func:`pipe` pumps the
    other end, so flow control is the kernel's and every asyncio-stream API
    works (``readexactly``, ``readuntil``, ``drain``, ``write_eof`` = our
    end-of-stream).
    """
    user_end, pump_end = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=pump_end, limit=READ_SIZE)
    task = asyncio.get_running_loop().create_task(pipe(conn, reader, writer))
    streams = await asyncio.open_connection(sock=user_end, limit=READ_SIZE)
    _PUMPS.add(task)
    task.add_done_callback(_PUMPS.discard)
    return streams


_PUMPS: set[asyncio.Task[Ended]] = set()  # keep pump tasks alive while they run

"""stdin/stdout ↔ tunnel, binary-safe, for ``swsrs raw``.

stdin may be a pipe, a file or a terminal, which epoll cannot all watch, so
it is read by a daemon thread (a read blocked on a terminal cannot be
interrupted, and must not keep the process alive once the tunnel is gone);
a small bounded queue carries its chunks, so a slow tunnel stops the reads.
stdout is written with ``os.write`` in a worker thread for the same reason.

Nothing is read from stdin before the other side is there. The end of stdin
is our end-of-stream; the other side's end-of-stream closes our stdout (the
program reading it sees EOF) once every byte is written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading

from swsrs.client.connection import Connection
from swsrs.client.streams import drive
from swsrs.errors import PeerGone, os_reason
from swsrs.peer import Ended

READ_SIZE = 64 * 1024


async def pipe(conn: Connection, stdin_fd: int, stdout_fd: int) -> Ended:
    """stdin → tunnel and tunnel → stdout, each until its end; return how the tunnel ended."""
    return await drive(conn, lambda: _up(conn, stdin_fd), lambda: _down(conn, stdout_fd))


async def _up(conn: Connection, fd: int) -> None:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    def read_stdin() -> None:
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except (OSError, ValueError):
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                return  # the loop is gone or stopping: nobody wants more input
            if not data:
                return

    threading.Thread(target=read_stdin, name="swsrs-stdin", daemon=True).start()
    try:
        while data := await chunks.get():
            await conn.send(data)
        await conn.write_eof()
    except PeerGone:
        return


async def _down(conn: Connection, fd: int) -> None:
    try:
        while True:
            try:
                msg = await conn.recv()
            except PeerGone as exc:
                if not exc.clean:
                    return
                break
            data = msg.encode() if isinstance(msg, str) else msg
            await asyncio.to_thread(_write_all, fd, data)
            await conn.ack(len(msg))
        _close_output(fd)
        await conn.ack_eof()
    except OSError as exc:
        conn.fail(f"could not write what arrived to stdout: {os_reason(exc)}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close_output(fd: int) -> None:
    """Give the reader of ``fd`` its EOF now: point ``fd`` at /dev/null (the original pipe or
    file closes; later writes to stdout, if any, go nowhere instead of failing)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)

"""stdin/stdout ↔ tunnel, binary-safe, for ``swsrs raw``.

stdin may be a pipe, a file or a terminal, which epoll cannot all watch, so
it is read by a daemon thread (a read blocked on a terminal cannot be
interrupted, and must not keep the process alive once the tunnel is gone);
a small bounded queue carries its chunks, so a slow tunnel stops the reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import BinaryIO

from swsrs.client.connection import Connection
from swsrs.errors import PeerGone

READ_SIZE = 64 * 1024


async def pipe(conn: Connection, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """stdin → tunnel and tunnel → stdout until either ends."""

    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    fd = stdin.fileno()

    def read_stdin() -> None:
        while True:
            try:
                # os.read, not the buffered object: a daemon thread blocked in
                # BufferedReader.read holds its lock and aborts interpreter exit.
                data = os.read(fd, READ_SIZE)
            except (OSError, ValueError):
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return  # the loop is gone
            if not data:
                return

    threading.Thread(target=read_stdin, name="swsrs-stdin", daemon=True).start()

    async def up() -> None:
        while data := await chunks.get():
            await conn.send(data)

    async def down() -> None:
        def put(data: bytes) -> None:
            stdout.write(data)
            stdout.flush()

        while True:
            try:
                msg = await conn.recv()
            except PeerGone:
                return
            await asyncio.to_thread(put, msg.encode() if isinstance(msg, str) else msg)

    up_task = asyncio.ensure_future(up())
    down_task = asyncio.ensure_future(down())
    try:
        await asyncio.wait({up_task, down_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        down_task.cancel()
        up_task.cancel()
        with contextlib.suppress(BaseException):
            await down_task
        with contextlib.suppress(Exception):
            await conn.close()

"""stdin/stdout ↔ tunnel, binary-safe, for ``swsrs raw``.

stdin may be a pipe, a file or a terminal, which epoll cannot all watch, so
reads and writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import BinaryIO

from swsrs.client.connection import Connection
from swsrs.errors import PeerGone

READ_SIZE = 64 * 1024


async def pipe(conn: Connection, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """stdin → tunnel and tunnel → stdout until either ends."""

    async def up() -> None:
        read = getattr(stdin, "read1", stdin.read)
        while data := await asyncio.to_thread(read, READ_SIZE):
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
        # A thread blocked in stdin.read cannot be cancelled; the process exits anyway.
        down_task.cancel()
        up_task.cancel()
        with contextlib.suppress(BaseException):
            await down_task
        with contextlib.suppress(Exception):
            await conn.close()

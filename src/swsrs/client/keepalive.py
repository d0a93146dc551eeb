"""Keepalive for a :class:`~swsrs.client.connection.Connection`: ping when the relay is silent.

Not aiohttp's heartbeat: that one counts a pause in *our* reading (a slow
stdout, a stalled application) as a dead connection, because while we do not
read, no pong can arrive. Here a pause of ours proves nothing and is not held
against the connection; a connection silent for two intervals while we read
is lost (then resumed, or the end).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aiohttp

from swsrs.peer import State

if TYPE_CHECKING:
    from swsrs.client.connection import Connection


async def watch(conn: Connection, interval: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval / 2)
        if conn.protocol.state is State.ENDED:
            return
        if conn.reading_paused or conn.protocol.state is State.AWAY:
            conn.heard = loop.time()  # silence is ours, or a reconnect is under way
            continue
        silent = loop.time() - conn.heard
        if silent >= interval * 2:
            conn.drop_silent()
        elif silent >= interval:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await conn.ws.ping()

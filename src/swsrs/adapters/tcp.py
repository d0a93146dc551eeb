"""TCP ↔ tunnel: ``listen`` (tcp-listen) and ``dial`` (tcp-dial), and the pipe they share."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from swsrs.client.connection import Connection
from swsrs.client.streams import READ_SIZE, pipe
from swsrs.errors import SwsrsError


class TargetUnreachable(SwsrsError):
    """``tcp-dial`` could not connect to its target."""


def _split_hostport(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid address {addr!r} (want HOST:PORT)")
    return host.strip("[]") or "127.0.0.1", int(port)


async def listen(
    connect: Callable[[], Any],
    address: str = "127.0.0.1:0",
    *,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Bind ``address``, report it, accept ONE TCP connection, attach, tunnel it, return.

    ``connect`` is a coroutine function returning a :class:`Connection`; it is
    called only once a TCP client has arrived.
    """
    host, port = _split_hostport(address)
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if accepted.done():
            w.close()  # one connection per tunnel
            return
        accepted.set_result((r, w))

    server = await asyncio.start_server(on_client, host, port, limit=READ_SIZE)
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    if on_listening is not None:
        on_listening(shown)
    try:
        reader, writer = await accepted
    finally:
        server.close()
    _nodelay(writer)
    try:
        conn = await connect()
    except BaseException:
        writer.close()
        raise
    await pipe(conn, reader, writer)


async def dial(conn: Connection, target: str) -> None:
    """Connect the attached tunnel to ``target`` and pipe until either side ends."""
    host, port = _split_hostport(target)
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
    except OSError as exc:
        await conn.close(1011, "target unreachable")
        raise TargetUnreachable(
            f"cannot connect to target {target}: {exc.strerror or exc}"
        ) from None
    _nodelay(writer)
    await pipe(conn, reader, writer)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

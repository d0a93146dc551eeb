"""TCP ↔ tunnel: ``listen`` (tcp-listen) and ``dial`` (tcp-dial), over the shared pipe."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from swsrs.client.connection import Connection
from swsrs.client.streams import READ_SIZE, pipe
from swsrs.errors import ConfigError, PeerGone, os_reason
from swsrs.peer import Ended

CONNECT_TIMEOUT = 15.0  # tcp-dial's connect to --target


def split_hostport(
    addr: str, *, what: str = "address", allow_zero: bool = False
) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; a ``ConfigError`` names what is wrong."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"invalid {what} {addr!r} (want HOST:PORT)")
    n = int(port)
    if not (0 if allow_zero else 1) <= n <= 65535:
        raise ConfigError(f"invalid {what} {addr!r}: port {n} is outside 1-65535")
    host = host.strip("[]")
    if not host and not allow_zero:
        raise ConfigError(f"invalid {what} {addr!r} (want HOST:PORT)")
    return host or "127.0.0.1", n


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def listen(
    connect: Callable[[], Awaitable[Connection]],
    address: str = "127.0.0.1:0",
    *,
    on_listening: Callable[[str], None] | None = None,
    on_accepted: Callable[[str], None] | None = None,
) -> Ended:
    """Bind ``address``, report it, accept ONE TCP connection, attach, tunnel it.

    ``connect`` is called only once a TCP client has arrived.
    """
    host, port = split_hostport(address, what="--listen address", allow_zero=True)
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
    if on_listening is not None:
        on_listening(format_hostport(bound[0], bound[1]))
    try:
        reader, writer = await accepted
    finally:
        server.close()
    if on_accepted is not None:
        peer = writer.get_extra_info("peername")
        on_accepted(format_hostport(peer[0], peer[1]) if peer else "?")
    _nodelay(writer)
    try:
        conn = await connect()
    except BaseException:
        writer.transport.abort()
        raise
    return await pipe(conn, reader, writer)


async def dial(
    conn: Connection, target: str, *, on_connected: Callable[[str], None] | None = None
) -> Ended:
    """Once the other side is there, connect to ``target`` and pipe until both ends are done.

    If the target cannot be reached the other side is told why, and the
    returned end says so.
    """
    host, port = split_hostport(target, what="--target")
    try:
        await conn.wait_paired()
    except PeerGone:
        await conn.close()
        return conn.ended or Ended(False, "the tunnel closed")
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
    except TimeoutError:
        conn.fail(f"cannot connect to target {target}: no answer within {CONNECT_TIMEOUT:g}s")
        ended = await conn.wait_ended()
        await conn.close()
        return ended
    except OSError as exc:
        conn.fail(f"cannot connect to target {target}: {os_reason(exc)}")
        ended = await conn.wait_ended()
        await conn.close()
        return ended
    if on_connected is not None:
        on_connected(target)
    _nodelay(writer)
    return await pipe(conn, reader, writer)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

"""A tunnel as a plain socket, for blocking code (paramiko's ``sock=``, ``socket.makefile``).

:func:`open_socket` attaches in a background thread running its own event
loop and returns one end of a ``socketpair``; the other end is piped to the
tunnel. Closing the socket closes the tunnel, and the tunnel closing makes
the socket read EOF.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from typing import Any

from swsrs.client.attach import connect
from swsrs.client.connection import Role
from swsrs.client.streams import pipe


def open_socket(
    url: str, session: str, token: str, *, role: Role = "responder", **kwargs: Any
) -> socket.socket:
    """Attach like :func:`swsrs.connect` and return a connected blocking socket.

    Handshake errors (:class:`~swsrs.NotFound`, :class:`~swsrs.Unauthorized`, …)
    are raised here, in the caller's thread.
    """
    user_end, pump_end = socket.socketpair()
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def run() -> None:
        try:
            conn = await connect(url, session, token, role=role, **kwargs)
        except BaseException as exc:
            ready.set_exception(exc)
            pump_end.close()
            return
        reader, writer = await asyncio.open_connection(sock=pump_end)
        ready.set_result(None)
        await pipe(conn, reader, writer)

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="swsrs-socket", daemon=True)
    thread.start()
    try:
        ready.result()
    except BaseException:
        user_end.close()
        raise
    return user_end

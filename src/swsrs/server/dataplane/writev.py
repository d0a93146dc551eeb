"""Writing forwarded bytes straight from the shared read buffer: one ``writev``, no copy.

Also the small socket helpers the listener and the splice share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from typing import Any

from swsrs.server.dataplane.pump import owned
from swsrs.wire.frames import Chunk

_WRITEV = hasattr(os, "writev")
_WRITEV_MAX_PARTS = 16  # more parts are small frames: one joined write is cheaper


def write_through(transport: asyncio.Transport, fd: int, parts: Sequence[Chunk]) -> None:
    """Write ``parts`` straight from the read buffer with one ``writev``.

    ``parts`` may view the shared read buffer (the C fast path re-frames
    messages in place; a splice passes bytes as read), so this is the
    socat-like path: read, (unmask in place,) ``writev``, no copy in between.
    While the transport has nothing queued, writing to its socket directly is
    what ``write`` itself would do; whatever the socket does not take is
    copied and given to the transport, which keeps the order and the flow
    control as usual. ``fd`` is -1 where that is not possible (TLS).
    (Before Python 3.12 ``Transport.writelines`` would also join the parts
    into a new ``bytes``.)
    """
    if (
        fd < 0
        or len(parts) > _WRITEV_MAX_PARTS
        or transport.get_write_buffer_size()
        or transport.is_closing()
    ):
        transport.writelines(owned(parts))
        return
    try:
        n = os.writev(fd, parts)
    except (BlockingIOError, InterruptedError):
        n = 0
    except OSError:  # the transport meets the same error and reports it
        transport.writelines(owned(parts))
        return
    for i, part in enumerate(parts):
        if n < len(part):
            transport.writelines(owned([part[n:], *parts[i + 1 :]]))
            return
        n -= len(part)


def socket_fd(transport: asyncio.BaseTransport) -> int:
    """The transport's socket for :func:`write_through`, or -1 (TLS, no socket)."""
    sock = transport.get_extra_info("socket")
    if not _WRITEV or sock is None or transport.get_extra_info("sslcontext") is not None:
        return -1
    return int(sock.fileno())


def format_addr(addr: Any) -> str:
    with contextlib.suppress(TypeError, ValueError, IndexError):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "?"

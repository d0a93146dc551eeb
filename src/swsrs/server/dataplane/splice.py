"""Several nodes behind a balancer that knows nothing of sessions: the splice path.

On a shared store, the first node a session's peer reaches *claims* the
session (its advertised address, in the store, renewed once a second while
it holds a peer). A peer that reaches another node is admitted there
(404/401/403) and then spliced: that node opens a TCP connection to the
holder, replays the request head — marked with ``X-Swsrs-Spliced`` so the
holder seats it instead of splicing again — and from then on copies bytes
both ways without looking at them. The holder sees an ordinary attach and
does everything else (409, pairing, forwarding, closing). If the holder
cannot be reached, the node takes the claim over and seats the peer itself;
the counterpart re-attaches, reaches the new holder, and the pair carries on.

The extra hop costs a copy through one more process; a balancer that hashes
``/relay/{id}`` (deploy/nginx/swsrs.conf) never needs it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swsrs.server.dataplane.listener import RelayProtocol

log = logging.getLogger("swsrs.relay")

SPLICED_HEADER = "X-Swsrs-Spliced"
CONNECT_TIMEOUT = 3.0


def mark_spliced(head: bytes) -> bytes:
    """The request head with ``X-Swsrs-Spliced: 1`` added (``head`` ends with a blank line)."""
    return head[:-2] + SPLICED_HEADER.encode() + b": 1\r\n\r\n"


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Splice(asyncio.BufferedProtocol):
    """The connection to the node holding the session: its bytes go to the client as they are,
    read into the listener's shared buffer and written from it (``RelayProtocol.writelines``)."""

    def __init__(self, client: RelayProtocol, buffer: memoryview) -> None:
        self.client = client
        self.buffer = buffer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.client.transport is not None:
            self.client.writelines((self.buffer[:nbytes],))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()  # after what is queued for it

    # The holder stops taking bytes: stop reading the client (and the other way round
    # in RelayProtocol.pause_writing).
    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()


async def connect(
    client: RelayProtocol, holder: str, head: bytes, buffer: memoryview
) -> asyncio.Transport | None:
    """Open the splice to ``holder`` and send it ``head``; ``None`` if it cannot be reached."""
    loop = asyncio.get_running_loop()
    try:
        host, port = split_addr(holder)
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: Splice(client, buffer), host, port), CONNECT_TIMEOUT
        )
    except (OSError, ValueError, TimeoutError) as exc:
        log.warning("session holder %s unreachable: %s", holder, exc)
        return None
    transport.write(mark_spliced(head))
    return transport

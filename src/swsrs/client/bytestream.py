"""The byte-stream view of a tunnel: ``read``/``readexactly``/``write`` on top of a
connection's messages (``Connection.open_stream`` gives real asyncio streams)."""

from __future__ import annotations

import asyncio

from swsrs.errors import PeerGone


class ByteStream:
    """Mixed into :class:`~swsrs.client.connection.Connection`, which provides the messages."""

    _leftover: bytes = b""

    async def recv(self) -> bytes | str:
        raise NotImplementedError

    async def send(self, data: bytes | bytearray | memoryview | str) -> None:
        raise NotImplementedError

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: whatever the next message holds); ``b""`` at a clean end.
        Raises :class:`PeerGone` when the tunnel ended otherwise."""
        if not self._leftover:
            try:
                msg = await self.recv()
            except PeerGone as exc:
                if exc.clean:
                    return b""
                raise
            self._leftover = msg.encode() if isinstance(msg, str) else msg
        data = self._leftover
        if n < 0 or len(data) <= n:
            self._leftover = b""
            return data
        self._leftover = data[n:]
        return data[:n]

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        need = n
        while need:
            chunk = await self.read(need)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes as one binary message (waits for the pairing and for the socket)."""
        if data:
            await self.send(data)

"""``dial`` / ``accept``: attach to a session's slot and get a :class:`Connection`.

A connection has two views of the same tunnel: messages (``send``/``recv``,
one WebSocket message each, bytes or str kept) and a byte stream
(``read``/``write``, and ``open_stream()`` for code written against asyncio
streams). Sending waits for the socket to drain, so a slow reader on the
far side slows the writer here instead of filling memory.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp

from swsrs.errors import (
    Forbidden,
    HandshakeTimeout,
    HTTPStatusError,
    NotFound,
    PeerGone,
    RelayUnreachable,
    SlotTaken,
    Unauthorized,
)
from swsrs.urls import relay_url

Role = Literal["initiator", "responder"]
SSLArg = _ssl.SSLContext | bool | None

_REFUSALS: dict[int, tuple[type[HTTPStatusError], str]] = {
    404: (NotFound, "session not found or expired"),
    401: (Unauthorized, "token refused by the relay"),
    403: (Forbidden, "connection forbidden by the relay (Origin not allowed?)"),
    409: (SlotTaken, "this slot of the session is already held by another connection"),
}


class Connection:
    """One end of a tunnel."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        http: aiohttp.ClientSession,
        *,
        session_id: str,
        role: Role,
    ) -> None:
        self._ws = ws
        self._http = http
        self.session_id = session_id
        self.role = role
        self._leftover = b""
        self._eof = False

    # -- message view ------------------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview | str) -> None:
        """Send one message: ``str`` as a text message, bytes-like as binary."""
        try:
            if isinstance(data, str):
                await self._ws.send_str(data)
            else:
                await self._ws.send_bytes(bytes(data) if not isinstance(data, bytes) else data)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise PeerGone(f"tunnel closed while sending: {exc}", self._ws.close_code) from exc

    async def recv(self) -> bytes | str:
        """The next message; raises :class:`PeerGone` once the tunnel is closed."""
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise PeerGone(f"tunnel failed: {self._ws.exception()}", self._ws.close_code)
        code = self._ws.close_code
        reason = msg.extra if isinstance(msg.extra, str) and msg.extra else ""
        raise PeerGone(
            f"tunnel closed ({code}{' ' + reason if reason else ''})",
            code,
        )

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes | str]:
        while True:
            try:
                yield await self.recv()
            except PeerGone:
                return

    # -- byte-stream view ----------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: whatever the next message holds); ``b""`` at the end."""
        if not self._leftover:
            if self._eof:
                return b""
            try:
                msg = await self.recv()
            except PeerGone:
                self._eof = True
                return b""
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
        """Send bytes as one binary message (waits for the socket to drain)."""
        if data:
            await self.send(data)

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Real asyncio streams for this tunnel (see :func:`swsrs.client.streams.open_stream`)."""
        from swsrs.client.streams import open_stream

        return await open_stream(self)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the tunnel (the other side is released by the relay) and the HTTP session."""
        try:
            if not self._ws.closed:
                await self._ws.close(code=code, message=reason.encode())
        finally:
            await self._http.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(
    url: str,
    session: str,
    token: str,
    *,
    role: Role = "responder",
    handshake_timeout: float = 10.0,
    keepalive: float | None = 20.0,
    ssl: SSLArg = None,
    max_message_size: int = 0,
) -> Connection:
    """Attach to ``role``'s slot of ``session`` on the relay at ``url``.

    ``url`` is the relay's base (``http(s)://`` or ``ws(s)://``); ``keepalive``
    is the ping interval in seconds (``None`` for none); ``max_message_size``
    0 means unlimited. Raises :class:`~swsrs.NotFound`,
    :class:`~swsrs.Unauthorized`, :class:`~swsrs.SlotTaken`,
    :class:`~swsrs.RelayUnreachable` or :class:`~swsrs.HandshakeTimeout`.
    """
    target = relay_url(url, session)
    http = aiohttp.ClientSession()
    try:
        ws = await asyncio.wait_for(
            http.ws_connect(
                target,
                headers={"Authorization": f"Bearer {token}"},
                heartbeat=keepalive,
                max_msg_size=max_message_size,
                ssl=ssl if ssl is not None else True,
            ),
            handshake_timeout,
        )
    except aiohttp.WSServerHandshakeError as exc:
        await http.close()
        kind, text = _REFUSALS.get(exc.status, (HTTPStatusError, "relay refused the attach"))
        raise kind(exc.status, f"{text} (HTTP {exc.status})") from None
    except TimeoutError:
        await http.close()
        raise HandshakeTimeout(f"no answer from {target} within {handshake_timeout:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        await http.close()
        raise RelayUnreachable(f"cannot reach the relay at {url}: {_reason(exc)}") from None
    except BaseException:
        await http.close()
        raise
    return Connection(ws, http, session_id=session, role=role)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error)
    return str(exc) or type(exc).__name__


async def dial(url: str, session: str, token: str, **kwargs: object) -> Connection:
    """Attach as the initiator (see :func:`connect`)."""
    return await connect(url, session, token, role="initiator", **kwargs)  # type: ignore[arg-type]


async def accept(url: str, session: str, token: str, **kwargs: object) -> Connection:
    """Attach as the responder (see :func:`connect`)."""
    return await connect(url, session, token, role="responder", **kwargs)  # type: ignore[arg-type]

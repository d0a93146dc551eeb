"""One end of a tunnel: :class:`Connection` (made by :mod:`swsrs.client.attach`).

A connection drives one :class:`~swsrs.peer.PeerProtocol` over an aiohttp
WebSocket: a reader task feeds it what arrives and keeps a bounded inbox of
data (when the inbox is full it stops reading, so the relay and the far side
slow down instead of memory growing); sends wait for the pairing and for the
socket to drain. Two views of the same tunnel: messages (``send``/``recv``,
bytes or str kept) and a byte stream (``read``/``write``, ``write_eof``,
and ``open_stream()`` for code written against asyncio streams).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import aiohttp

from swsrs.client import reconnect
from swsrs.client.bytestream import ByteStream
from swsrs.client.keepalive import watch as keepalive_watch
from swsrs.errors import PeerGone
from swsrs.peer import (
    Acknowledged,
    Close,
    Data,
    Ended,
    EndOfStream,
    Event,
    Paired,
    PeerProtocol,
    State,
    ends,
)
from swsrs.peer.resume import DEFAULT_BUFFER

Role = Literal["initiator", "responder"]
SSLArg = _ssl.SSLContext | bool | None
EventCallback = Callable[[Event], None]
Opener = Callable[[], Awaitable[tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientSession]]]

INBOX_MESSAGES = 16  # data messages held for the application before reading stops
FEATURES: frozenset[str] = frozenset()  # always offered beyond swsrs.v1 ("resume" on request)

_END = None  # in the inbox: the other side's end-of-stream


class Connection(ByteStream):
    """One end of a tunnel: the message view here, the byte-stream view from
    :class:`~swsrs.client.bytestream.ByteStream`."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        http: aiohttp.ClientSession,
        *,
        session_id: str,
        role: Role,
        auto_ack: bool = True,
        on_event: EventCallback | None = None,
        keepalive: float | None = None,
        features: frozenset[str] = frozenset(),
        resume_buffer: int = DEFAULT_BUFFER,
        reopen: Opener | None = None,
        reconnect_for: float = 0.0,
    ) -> None:
        self._ws = ws
        self._http = http
        self.session_id = session_id
        self.role = role
        # auto_ack: a message counts as delivered once recv() hands it out. Adapters that
        # write elsewhere (stdout, TCP) turn it off and acknowledge with ack()/ack_eof().
        self.auto_ack = auto_ack
        self._on_event = on_event
        self.protocol = PeerProtocol(ws.protocol, features, resume_buffer=resume_buffer)
        self._reopen = reopen  # attaches again after a drop (resume); None: a drop ends it
        self._reconnect_for = reconnect_for
        loop = asyncio.get_running_loop()
        self._paired: asyncio.Future[Paired] = loop.create_future()
        self._ended: asyncio.Future[Ended] = loop.create_future()
        self._inbox: collections.deque[bytes | str | None] = collections.deque()
        self._inbox_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._send_lock = asyncio.Lock()
        self._writable = asyncio.Event()  # set while the protocol may send (or has ended)
        self._reading: asyncio.Task[None] | None = None
        self._kicked: asyncio.Future[None] | None = None
        self._dispatch()
        self.heard = loop.time()  # when the relay last sent anything
        self._reader = loop.create_task(self._run())
        self._keepalive = (
            loop.create_task(keepalive_watch(self, keepalive)) if keepalive is not None else None
        )

    # -- the reader task ------------------------------------------------------------

    async def _run(self) -> None:
        """Read each connection until it ends; after a drop that both sides resume, attach
        again (the protocol resends the gap) and go on reading."""
        while True:
            self._reading = asyncio.ensure_future(self._read_loop(self._ws))
            await asyncio.wait({self._reading})  # cancelled by the keepalive on silence
            if self.protocol.state is not State.AWAY or not await self._come_back():
                return

    async def _come_back(self) -> bool:
        with contextlib.suppress(Exception):
            await self._http.close()
        if self._reopen is None:
            self.protocol.give_up(ends.CONNECTION_LOST)
            self._dispatch()
            return False
        try:
            ws, http = await reconnect.until_attached(
                self._reopen, self._reconnect_for, self._on_event
            )
        except reconnect.GaveUp as exc:
            self.protocol.give_up(str(exc))
            self._dispatch()
            return False
        self._ws, self._http = ws, http
        self.heard = asyncio.get_running_loop().time()
        self.protocol.reattached(ws.protocol)
        self._dispatch()
        await self._flush()
        return True

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        proto = self.protocol
        while proto.state is not State.ENDED and proto.state is not State.AWAY:
            msg = await ws.receive()
            self.heard = asyncio.get_running_loop().time()
            if msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT:
                proto.receive_message(msg.data)
            elif msg.type is aiohttp.WSMsgType.PING:
                # Answered in the background: the reader must never wait on a send.
                pong = asyncio.ensure_future(_quietly(ws.pong(msg.data)))
                _PONGS.add(pong)
                pong.add_done_callback(_PONGS.discard)
                continue
            elif msg.type is aiohttp.WSMsgType.PONG:
                continue
            elif msg.type is aiohttp.WSMsgType.CLOSING:
                continue  # our own close is under way (see _send)
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                proto.receive_close(msg.data, msg.extra if isinstance(msg.extra, str) else "")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                proto.receive_close(None)
            else:  # CLOSED: no close frame came (or ours was the last word)
                proto.receive_close(ws.close_code)
            self._dispatch()
            self._kick()
            if len(self._inbox) >= INBOX_MESSAGES:
                self._room.clear()
                await self._room.wait()

    @property
    def reading_paused(self) -> bool:
        """The application is not taking data: reading stopped on purpose (backpressure)."""
        return not self._room.is_set()

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse:
        return self._ws

    def drop_silent(self) -> None:
        """The keepalive's verdict: the connection is lost (resume, or the end)."""
        self.protocol.receive_close(None)
        self._dispatch()
        if self._reading is not None:
            self._reading.cancel()

    def _dispatch(self) -> None:
        while events := self.protocol.events_received():
            for ev in events:
                self._handle(ev)
        if self.protocol.can_end or self.protocol.state is State.ENDED:
            self._writable.set()
        else:
            self._writable.clear()

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, Data):
            self._inbox.append(ev.payload)
            self._inbox_ready.set()
            return
        if isinstance(ev, EndOfStream):
            if self.auto_ack and not self._inbox:
                self.protocol.delivered_eof()  # the application has had every byte
            self._inbox.append(_END)
            self._inbox_ready.set()
        elif isinstance(ev, Paired) and not self._paired.done():
            self._paired.set_result(ev)
        elif isinstance(ev, Ended):
            if not self._paired.done():
                self._paired.set_exception(PeerGone(ev.cause, ev.code))
                self._paired.exception()  # retrieved: nobody may be waiting for it
            self._ended.set_result(ev)
            self._inbox_ready.set()
        if self._on_event is not None and not isinstance(ev, Acknowledged):
            self._on_event(ev)

    async def _flush(self) -> None:
        """Send what the protocol queued, in order (one sender at a time); returns once sent,
        so a slow relay slows the caller (backpressure)."""
        async with self._send_lock:
            ws = self._ws
            while items := self.protocol.data_to_send():
                for item in items:
                    try:
                        if isinstance(item, bytes):
                            await ws.send_bytes(item)
                        elif isinstance(item, str):
                            await ws.send_str(item)
                        else:
                            await self._close_ws(item)
                    except (ConnectionError, aiohttp.ClientError, RuntimeError):
                        # Lost: what was not sent is kept for resending, or the end says so.
                        self.protocol.receive_close(None)
                        self._dispatch()
                        if self._reading is not None:
                            self._reading.cancel()
                        return

    def _kick(self) -> None:
        """Flush in the background: the reader and acknowledgements must never wait behind
        a send that waits for the relay (the close that would free it could not be read)."""
        if self._kicked is None or self._kicked.done():
            self._kicked = asyncio.ensure_future(self._flush())

    async def _close_ws(self, close: Close) -> None:
        if not self._ws.closed:
            reason = close.reason.encode()[:123].decode(errors="ignore").encode()
            await self._ws.close(code=close.code, message=reason)

    # -- pairing and the end --------------------------------------------------------------

    async def wait_paired(self) -> Paired:
        """Wait until the other side is there; raises :class:`PeerGone` if the tunnel ends first."""
        return await asyncio.shield(self._paired)

    async def wait_ended(self) -> Ended:
        """Wait until the tunnel is over; the result says whether it ended clean, and why not."""
        return await asyncio.shield(self._ended)

    @property
    def ended(self) -> Ended | None:
        return self._ended.result() if self._ended.done() else None

    async def finish(self) -> Ended:
        """End our stream and wait for the tunnel to end (the other side ends its stream too)."""
        if not self.protocol.eof_sent:
            await self.write_eof()
        return await self.wait_ended()

    # -- message view ------------------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview | str) -> None:
        """Send one message (``str`` as text, bytes-like as binary) once the other side is
        there; raises :class:`PeerGone` if the tunnel is over."""
        proto = self.protocol
        await self._until_writable()
        if not proto.can_send:
            raise self._gone("cannot send: the stream was ended")
        if isinstance(data, str):
            proto.send_text(data)
        else:
            proto.send_data(data if isinstance(data, bytes) else bytes(data))
        await self._flush()
        if proto.state is State.ENDED and not self._ended.result().ok:
            raise self._gone()

    async def _until_writable(self, *, end: bool = False) -> None:
        """Wait for the pairing, a resume, or (data only) room in the replay buffer."""
        proto = self.protocol
        while not (proto.can_end if end else proto.can_send) and proto.state is not State.ENDED:
            if proto.eof_sent:
                return
            self._writable.clear()  # every change of can_send is followed by _dispatch
            await self._writable.wait()

    async def recv(self) -> bytes | str:
        """The next message; raises :class:`PeerGone` at the end (``clean`` when the other
        side ended its stream, or the tunnel ended clean)."""
        while not self._inbox:
            if self._ended.done():
                raise self._gone()
            self._inbox_ready.clear()
            await self._inbox_ready.wait()
        item = self._inbox.popleft()
        if len(self._inbox) < INBOX_MESSAGES:
            self._room.set()
        if item is _END:
            self._inbox.appendleft(_END)  # the end stays the end
            if self.auto_ack:
                await self.ack_eof()
            raise PeerGone("the other side ended its stream", clean=True)
        if self.auto_ack:
            await self.ack(len(item))
        return item

    def _gone(self, fallback: str = "the tunnel is closed") -> PeerGone:
        ended = self.ended
        if ended is None:
            return PeerGone(fallback)
        return PeerGone(ended.cause or "the tunnel ended", ended.code, clean=ended.ok)

    async def ack(self, n: int) -> None:
        """``n`` more received bytes are delivered (for ``auto_ack=False`` adapters)."""
        self.protocol.delivered(n)
        self._kick()

    async def ack_eof(self) -> None:
        """The other side's end-of-stream is delivered: every byte written, output closed."""
        if self.protocol.state is not State.ENDED:
            self.protocol.delivered_eof()
            self._dispatch()
            self._kick()

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes | str]:
        while True:
            try:
                yield await self.recv()
            except PeerGone:
                return

    # -- byte-stream view ----------------------------------------------------------

    async def write_eof(self) -> None:
        """No more data from this side. The other side reads the end once it has every
        byte; a counterpart that knows no end-of-stream (a raw peer) is disconnected."""
        await self._until_writable(end=True)
        if self.protocol.can_end:
            self.protocol.send_eof()
            self._dispatch()
            await self._flush()

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

    def fail(self, reason: str) -> None:
        """This side cannot go on: the other side is told ``reason`` and the tunnel ends."""
        self.protocol.fail(reason)
        self._dispatch()
        self._kick()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Leave now: close the tunnel (the relay releases the other side) and the HTTP session.

        Use :meth:`finish` for a clean end where the other side confirms delivery.
        """
        try:
            await self._flush()
            if not self._ws.closed:
                await self._close_ws(Close(code, reason))
            if self.protocol.state is not State.ENDED:
                self.protocol.receive_close(code, "closed by this side")
                self._dispatch()
        finally:
            for task in (self._reader, self._reading, self._keepalive, self._kicked):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            await self._http.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_PONGS: set[asyncio.Future[None]] = set()  # pongs on their way (kept from the collector)


async def _quietly(send: Awaitable[None]) -> None:
    with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
        await send

"""Every accepted connection starts here: ``/relay/`` upgrades are ours, the rest is aiohttp's.

:class:`RelayProtocol` reads the first request line of a new connection.
Anything but ``GET /relay/…`` is handed, with the bytes read so far, to
aiohttp's low-level server (``AppRunner.server``), which then owns the
connection for good (admin API, discovery, health, keep-alive and all).
For a ``/relay/`` request it reads the head (parsed by ``httptools``),
decides the attach with :func:`~swsrs.server.dataplane.admit.admit`, writes the
``101`` and from then on feeds the connection's bytes to a
:class:`~swsrs.server.dataplane.pump.Peer`.

Why not let aiohttp serve the upgrade too: an attached peer then costs an
aiohttp request handler, a request task and its objects (about 27 KB a
pair, measured) for as long as the tunnel lives, and every read allocates a
fresh ``bytes``. Here a peer is this protocol, its transport and a
:class:`Peer`, and every connection reads into one shared buffer
(``asyncio.BufferedProtocol``): the buffer is consumed before the next read
of any connection, because nothing in the pump keeps a view of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import parse_qs

import httptools
from multidict import CIMultiDict

from swsrs.errors import StoreError
from swsrs.server import metrics
from swsrs.server.dataplane import guard, splice
from swsrs.server.dataplane.admit import (
    PATH_PREFIX,
    SLOT_TAKEN,
    Refusal,
    Seat,
    admit,
    log_attach,
    log_refusal,
)
from swsrs.server.dataplane.plane import DataPlane
from swsrs.server.dataplane.pump import (
    CLOSE_TIMEOUT,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    Peer,
)
from swsrs.server.dataplane.writev import format_addr, socket_fd, write_through
from swsrs.wire.frames import Chunk
from swsrs.wire.handshake import refusal, switching_protocols
from swsrs.wire.subprotocol import SUBPROTOCOL, parse_offer

log = logging.getLogger("swsrs.relay")

READ_BUFFER_SIZE = 1024 * 1024  # measured: 256 KiB → 1 MiB cut relay CPU for 64 KiB messages ~10%
_BUFFER = memoryview(bytearray(READ_BUFFER_SIZE))  # shared by every connection of the process

MAX_HEAD = 16 * 1024  # request line + headers of an upgrade
_HEAD_BUFFER = _BUFFER[:MAX_HEAD]
_RELAY_LINE = b"GET " + PATH_PREFIX.encode()


class _Head:
    """httptools callbacks collecting the URL and headers of one request."""

    __slots__ = ("headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: CIMultiDict[str] = CIMultiDict()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(name.decode("latin-1"), value.decode("latin-1"))


class RelayProtocol(asyncio.BufferedProtocol):
    """One accepted connection: request head, then either aiohttp or a relay peer."""

    __slots__ = (
        "_adopt",
        "_counted",
        "_drain",
        "_early",
        "_fd",
        "_head",
        "_splice_fd",
        "_timer",
        "peer",
        "plane",
        "splice",
        "transport",
        "writing_paused",
    )

    def __init__(self, plane: DataPlane, adopt: Seat | None = None) -> None:
        self.plane = plane
        self._adopt = adopt  # a connection another process admitted (see worker.py)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.writing_paused = False
        self._head: bytearray | None = bytearray()
        self._early = bytearray()  # bytes after the head, sent before the 101 (pipelined frames)
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fd = -1  # the socket, for writev straight from the read buffer (plain TCP only)
        self.splice: asyncio.Transport | None = None  # spliced to the session's holder node
        self._splice_fd = -1
        self._counted = False  # in plane.conns (until closed or handed to aiohttp)

    # -- asyncio callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._adopt is not None:
            seat, self._adopt = self._adopt, None
            self.seat(seat)  # before the first read: the head was read elsewhere
            return
        plane = self.plane
        if guard.full(plane):
            self.transport = None
            guard.Overflow(plane).take(transport)
            return
        plane.conns += 1
        self._counted = True
        plane.handshaking.add(self)
        loop = asyncio.get_running_loop()
        timeout = plane.header_timeout
        self._timer = loop.call_later(timeout, guard.head_timed_out, transport, timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Before the upgrade, read no more than a head's worth: what follows stays in
        # the socket, for aiohttp or for the worker that will own the connection.
        return _HEAD_BUFFER if self.peer is None and self.splice is None else _BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        peer = self.peer
        if peer is not None:  # the hot path
            peer.feed_data(_BUFFER[:nbytes])
            return
        if self.splice is not None:  # another node holds the session: pass bytes as they are
            write_through(self.splice, self._splice_fd, (_BUFFER[:nbytes],))
            return
        head = self._head
        if head is None:  # the attach is being decided; reading is paused, keep what came
            self._early += _BUFFER[:nbytes]
            return
        head += _BUFFER[:nbytes]
        if len(head) < len(_RELAY_LINE) and _RELAY_LINE.startswith(head):
            return
        if not head.startswith(_RELAY_LINE):
            self._to_http(bytes(head))
            return
        end = head.find(b"\r\n\r\n", 0, MAX_HEAD)
        if end < 0:
            if len(head) >= MAX_HEAD:
                self._refuse(431, "request head too large")
            return
        self._head = None
        self._early = head[end + 4 :]
        self._upgrade(bytes(head[: end + 4]))

    def eof_received(self) -> bool | None:
        # The client half-closed: a WebSocket has no half-close, so its peer is gone now
        # (slot released, counterpart told). The transport closes once what is queued
        # is written, or after CLOSE_TIMEOUT if the client does not read it.
        if self.peer is not None:
            self.peer.feed_eof()
        if self.transport is not None:
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_over()
        if self._counted:
            self._counted = False
            self.plane.conns -= 1
        peer = self.peer
        if peer is not None:
            peer.feed_eof()
        if self.splice is not None:
            self.splice.close()
        self._wake_drain()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.splice is not None:
            self.splice.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.splice is not None and not self.splice.is_closing():
            self.splice.resume_reading()
        self._wake_drain()

    # -- what a Peer needs (FlowControl, Drainable) ----------------------------------------

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def writelines(self, parts: Sequence[Chunk]) -> None:
        """Write forwarded frames to this client (see :func:`write_through`)."""
        assert self.transport is not None
        write_through(self.transport, self._fd, parts)

    async def drain(self) -> None:
        if not self.writing_paused or self.transport is None or self.transport.is_closing():
            return
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain)

    def _wake_drain(self) -> None:
        waiter = self._drain
        self._drain = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the request head ----------------------------------------------------------------

    def _handshake_over(self) -> None:
        self.plane.handshaking.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _to_http(self, data: bytes) -> None:
        """Not ours: aiohttp serves this connection from now on, starting with ``data``,
        behind a guard that keeps the head deadline (and, later, the count in plane.conns)."""
        deadline = self._timer.when() if self._timer is not None else None
        self._handshake_over()
        transport = self.transport
        assert transport is not None
        self.transport = None
        assert self.plane.http is not None
        self._counted = False  # the guard counts it in plane.conns from now on
        handler = guard.HttpGuard(self.plane, self.plane.http(), deadline)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def _refuse(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        self._handshake_over()
        self._head = None
        if self.transport is not None:
            self.transport.write(refusal(status, reason, headers))
            self.transport.close()

    def _upgrade(self, head: bytes) -> None:
        parsed = _Head()
        try:
            parser = httptools.HttpRequestParser(parsed)
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # expected for an upgrade: the head is complete
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request: {exc}")
            return
        url = httptools.parse_url(parsed.url)
        session_id = url.path.decode("latin-1")[len(PATH_PREFIX) :]
        if not session_id or "/" in session_id:
            assert self.transport is not None
            remote = format_addr(self.transport.get_extra_info("peername"))
            log_refusal(session_id or "-", None, remote, 404, "no such session path")
            self._refuse(404, "session not found or expired")
            return
        query = parse_qs(url.query.decode("latin-1", "replace")) if url.query else {}
        token = query.get("token", [None])[0]
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(
            self._attach(session_id, parsed.headers, token, head)
        )
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _attach(
        self, session_id: str, headers: CIMultiDict[str], token: str | None, head: bytes
    ) -> None:
        plane = self.plane
        assert plane.store is not None and self.transport is not None
        remote, source = guard.client(self.transport, headers, plane.limits)
        verdict = await admit(plane.store, session_id, headers, token, plane.origins,
                              source=source, limits=plane.limits)  # fmt: skip
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if isinstance(verdict, Refusal):
            log_refusal(session_id, verdict.role, remote, verdict.status, verdict.reason,
                        verdict.limit)  # fmt: skip
            self._refuse(verdict.status, verdict.reason, verdict.headers())
            return
        record, role = verdict
        if plane.advertise is not None:
            forward = splice.SPLICED_HEADER not in headers  # a spliced attach is never re-spliced
            try:
                if await self._spliced(record.id, head, plane.advertise, forward):
                    return
            except StoreError as exc:
                log.warning("attach to %s refused: %s", record.id, exc)
                metrics.attach_refused(503)
                self._refuse(503, "session store unavailable, try again")
                return
            transport = self.transport
            if transport is None or transport.is_closing():
                return
        features = parse_offer(headers.get("Sec-WebSocket-Protocol"))
        key = headers["Sec-WebSocket-Key"]
        seat = Seat(record, role, key, bytes(self._early), remote, features)
        self._early = bytearray()
        if plane.handoff is not None:
            # Another process holds this session's peers: it gets the socket.
            self._handshake_over()
            self.transport = None
            plane.handoff(transport, seat)
            return
        self.seat(seat)

    async def _spliced(self, session_id: str, head: bytes, me: str, forward: bool) -> bool:
        """Splice this connection to the node holding the session, if that is another node.

        A connection another node spliced here (``forward`` false) is seated only if
        this node really holds the session: the header alone proves nothing.
        """
        store = self.plane.store
        assert store is not None
        holder = await store.claim(session_id, me)
        if holder == me:
            return False
        if not forward:
            metrics.attach_refused(503)
            self._refuse(503, "this session moved to another relay node: retry")
            return True
        link = await splice.connect(self, holder, head + bytes(self._early), _BUFFER)
        if link is None:  # the holder is gone: this node takes the session over
            holder = await store.claim(session_id, me, replacing=holder)
            if holder == me:
                return False
            link = await splice.connect(self, holder, head + bytes(self._early), _BUFFER)
            if link is None:
                metrics.attach_refused(503)
                self._refuse(503, "the relay node holding this session is unreachable")
                return True
        if self.transport is None or self.transport.is_closing():
            link.close()
            return True
        self._handshake_over()
        self._head = None
        self._early = bytearray()
        self.splice = link
        self._splice_fd = socket_fd(link)
        self._fd = socket_fd(self.transport)
        log.info("splice session=%s to %s", session_id, holder)
        self.transport.resume_reading()
        return True

    def seat(self, seat: Seat) -> None:
        """Take the session's slot (or refuse 409), answer 101 and start forwarding."""
        transport = self.transport
        assert transport is not None
        plane = self.plane
        live = plane.rendezvous.session(seat.record)
        self._fd = socket_fd(transport)
        peer = plane.new_peer(
            live,
            seat.role,
            self,
            transport,
            self,
            max_message=plane.rendezvous.max_message,
            remote=seat.remote,
            writelines=self.writelines,
            features=seat.features,
        )
        if not live.reserve(seat.role, peer):
            reason = SLOT_TAKEN.format(role=seat.role)
            log_refusal(seat.record.id, seat.role, seat.remote, 409, reason)
            self._refuse(409, reason)
            return
        self._handshake_over()
        self._head = None
        selected = None if seat.features is None else SUBPROTOCOL
        transport.write(switching_protocols(seat.key, selected))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.peer = peer
        peer.ready = True
        log_attach(peer)
        live.activate(peer)
        if seat.early:
            peer.feed_data(seat.early)
        if not peer.read_paused and peer.state == 0:
            transport.resume_reading()


_TASKS: set[asyncio.Task[None]] = set()  # attach checks in flight (they are short)

"""The data plane's hot path: one attached client and the bytes it sends to its counterpart.

After the 101 response, aiohttp hands every byte of the connection to
:meth:`Peer.feed_data` (we stand where its own WebSocket reader would).
Frames are re-framed by :class:`~swsrs.wire.frames.FrameForwarder` and
written straight to the counterpart's transport, one write per read.

Backpressure: when the counterpart's transport stops taking bytes
(``writing_paused``), this peer stops reading its socket until the
counterpart drains. Before pairing, what a peer sends is held up to
``PENDING_LIMIT`` bytes, then its reading pauses too. Nothing queues
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from swsrs.server.stores.base import Role
from swsrs.wire import subprotocol
from swsrs.wire.frames import (
    CLOSE_GOING_AWAY,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Chunk,
    FrameForwarder,
    ProtocolError,
    close_payload,
    control_frame,
    frame_header,
    parse_close,
)

if TYPE_CHECKING:
    from swsrs.server.dataplane.rendezvous import LiveSession

log = logging.getLogger("swsrs.relay")

PENDING_LIMIT = 256 * 1024  # bytes held for a peer that has not attached yet
WRITE_HIGH_WATER = 256 * 1024  # per-connection kernel-side write buffer before pausing the sender
WRITE_LOW_WATER = 64 * 1024
CLOSE_TIMEOUT = 5.0  # how long a client has to answer our close frame


class FlowControl(Protocol):
    """What the pump needs from the connection's protocol object (aiohttp's RequestHandler)."""

    @property
    def writing_paused(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Drainable(Protocol):
    async def drain(self) -> None: ...


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def writelines(self, data: list[bytes]) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...


_OPEN, _CLOSING, _CLOSED = 0, 1, 2


def owned(parts: Sequence[Chunk]) -> list[bytes]:
    """``parts`` with every view of the shared read buffer copied, for keeping past this read.

    The forwarder's output may view the buffer the bytes were read into
    (see :meth:`~swsrs.wire.frames.FrameForwarder.feed`).
    """
    return [p if type(p) is bytes else bytes(p) for p in parts]


class Peer:
    """One client attached to one slot of a session."""

    __slots__ = (
        "_close_timer",
        "_drain_task",
        "_wait_timer",
        "attached",
        "counterpart",
        "done",
        "features",
        "flow",
        "fwd",
        "heard",
        "live",
        "pending",
        "pending_bytes",
        "pending_payload",
        "read_paused",
        "ready",
        "remote",
        "role",
        "state",
        "transport",
        "writelines",
        "writer",
    )

    def __init__(
        self,
        live: LiveSession,
        role: Role,
        flow: FlowControl,
        transport: Transport,
        writer: Drainable,
        *,
        max_message: int = -1,
        remote: str = "?",
        writelines: Callable[[Sequence[Chunk]], None] | None = None,
        features: tuple[str, ...] | None = None,
    ) -> None:
        self.live = live
        # Offered swsrs.v1 (wire/subprotocol.py): gets the relay's signals; None: raw peer.
        self.features = features
        self.role = role
        self.flow = flow
        self.transport = transport
        # Forwarded frames are written with this (the listener's writev path, or the transport's).
        self.writelines = writelines or (lambda parts: transport.writelines(owned(parts)))
        self.writer = writer
        self.remote = remote
        self.fwd = FrameForwarder(max_message)
        self.counterpart: Peer | None = None
        self.attached = True  # holds its slot (reserved before the handshake)
        self.ready = False  # handshake done: may be paired and written to
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.pending_payload = 0
        self.read_paused = False
        self.state = _OPEN
        self.heard = True  # something arrived since the keepalive last looked (liveness.py)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wait_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # -- pairing -----------------------------------------------------------

    def start_wait(self, seconds: float, reason: str) -> None:
        loop = asyncio.get_running_loop()
        self._wait_timer = loop.call_later(seconds, self.close, CLOSE_GOING_AWAY, reason)
        self.signal(subprotocol.waiting(seconds))

    def signal(self, text: str) -> None:
        """A text message of the relay's own, to a peer that offered swsrs.v1 (only)."""
        if self.features is not None and self.state == _OPEN:
            payload = text.encode()
            self.transport.write(frame_header(True, OP_TEXT, len(payload)) + payload)

    def pair(self, other: Peer) -> None:
        """Link two peers, tell each (if it asked) that the other is here, and deliver what
        each sent while alone; the signal comes before any of the other's bytes."""
        for p in (self, other):
            if p._wait_timer is not None:
                p._wait_timer.cancel()
                p._wait_timer = None
        self.signal(subprotocol.paired(other.features))
        other.signal(subprotocol.paired(self.features))
        self.counterpart = other
        other.counterpart = self
        self._flush_pending()
        other._flush_pending()

    def _flush_pending(self) -> None:
        other = self.counterpart
        if other is None or not self.pending:
            return
        other.writelines(self.pending)
        self._count(self.pending_payload)
        self.pending = []
        self.pending_bytes = self.pending_payload = 0
        if self.read_paused:
            self.read_paused = False
            self.flow.resume_reading()
        self._check_backpressure(other)

    # -- the hot path --------------------------------------------------------

    def feed_data(self, data: bytes | memoryview) -> tuple[bool, bytes]:
        """Bytes from this client: a view of the listener's shared read buffer, or (on the
        aiohttp path) a ``bytes``. Returns what aiohttp's parser interface expects."""
        self.heard = True
        fwd = self.fwd
        try:
            fwd.feed(data)
        except ProtocolError as exc:
            self._forward()  # the frames before the offending one still arrive
            self._fail(exc.code, exc.reason)
            return False, b""
        self._forward()
        if fwd.controls:
            self._on_controls()
        return False, b""

    def _forward(self) -> None:
        """Hand what the forwarder produced to the counterpart, or hold it until pairing."""
        fwd = self.fwd
        if not fwd.out:
            return
        out = fwd.out
        fwd.out = []
        payload = fwd.payload_bytes
        fwd.payload_bytes = 0
        if self.state != _OPEN:
            return  # closing: data frames are discarded, only a close reply matters
        other = self.counterpart
        if other is not None:
            other.writelines(out)
            self._count(payload)
            if other.flow.writing_paused and not self.read_paused:
                self._check_backpressure(other)
            return
        self.pending.extend(owned(out))
        self.pending_bytes += sum(map(len, out))
        self.pending_payload += payload
        if self.pending_bytes > PENDING_LIMIT and not self.read_paused:
            self.read_paused = True
            self.flow.pause_reading()

    def feed_eof(self) -> None:
        """The connection is gone (called by aiohttp when the socket closes)."""
        if self.state == _OPEN:
            self._release_counterpart()
            self._finish("connection lost")
        else:
            self._finish(None)

    def _count(self, n: int) -> None:
        if n:
            live = self.live
            if self.role == "initiator":
                live.bytes_in += n
            else:
                live.bytes_out += n
            live.last_activity = time.time()

    def _check_backpressure(self, other: Peer) -> None:
        if other.flow.writing_paused and not self.read_paused:
            self.read_paused = True
            self.flow.pause_reading()
            self._drain_task = asyncio.get_running_loop().create_task(self._resume_after(other))

    async def _resume_after(self, other: Peer) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await other.writer.drain()
        if self.read_paused and self.state == _OPEN:
            self.read_paused = False
            self.flow.resume_reading()

    # -- control frames and closing -------------------------------------------

    def _on_controls(self) -> None:
        controls = self.fwd.controls
        self.fwd.controls = []
        for opcode, payload in controls:
            if opcode == OP_PING:
                # A client that does not read what we send gets no more pongs: answering
                # every ping of one that only sends would queue them without bound.
                if self.state == _OPEN and not self.flow.writing_paused:
                    self._send_control(control_frame(OP_PONG, payload), droppable=True)
            elif opcode == OP_CLOSE:
                try:
                    code, reason = parse_close(payload)
                except ProtocolError as exc:
                    self._fail(exc.code, exc.reason)
                    return
                if self.state == _OPEN:
                    # The client starts the close: answer it, then release the counterpart.
                    reply = b"" if code == CLOSE_NO_STATUS else close_payload(code)
                    self._send_control(control_frame(OP_CLOSE, reply))
                    self._close_transport()
                    self._release_counterpart()
                    self._finish(f"closed by client ({code}{' ' + reason if reason else ''})")
                elif self.state == _CLOSING:
                    self._close_transport()  # the answer to our close: done
                    self._finish(None)
                return
            # pongs need nothing

    def _send_control(self, frame: bytes, *, droppable: bool = False) -> None:
        """Write a frame of the relay's own to this client, between forwarded frames.

        A ``droppable`` frame (a pong) is not queued behind another one: RFC 6455
        lets a pong answer only the latest ping.
        """
        other = self.counterpart
        if other is not None and other.fwd.mid_frame:
            if not (droppable and other.fwd.queued):
                other.fwd.send_between_frames(frame)
            return
        self.transport.write(frame)

    def _close_transport(self) -> None:
        """Close after what is queued is written, but never wait longer than CLOSE_TIMEOUT
        for a client that does not read (asyncio's close waits for the buffer to drain)."""
        self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)

    def close(self, code: int, reason: str) -> None:
        """The relay closes this client (peer left, DELETE, expiry, peer-wait, shutdown)."""
        if self.state != _OPEN:
            return
        other = self.counterpart
        self.counterpart = None
        if not self.ready:
            # Still in the handshake: the handler sees the state and hangs up.
            self.state = _CLOSING
            self._detach(reason, code)
            return
        if other is not None and other.fwd.mid_frame:
            # The counterpart vanished half-way through a frame to us: no close
            # frame can follow a truncated frame, so the connection is cut.
            self.transport.abort()
            self._finish(f"{reason} (aborted mid-frame)")
            return
        self.state = _CLOSING
        self._detach(reason, code)
        self.transport.write(control_frame(OP_CLOSE, close_payload(code, reason)))
        self._close_timer = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT, self.transport.abort
        )

    def _fail(self, code: int, reason: str) -> None:
        log.info("session %s %s: protocol error: %s", self.live.id, self.role, reason)
        other = self.counterpart
        self.close(code, reason)
        if other is not None:
            other.close(CLOSE_NORMAL, "peer disconnected")

    def ping(self) -> None:
        """A ping of the relay's own (keepalive), between forwarded frames."""
        if self.state == _OPEN and self.ready:
            self._send_control(control_frame(OP_PING, b""), droppable=True)

    def drop(self, reason: str) -> None:
        """Cut a connection that no longer answers (no close frame: it would not be read)."""
        if self.state == _OPEN:
            self._release_counterpart()
            self._finish(reason)
        self.transport.abort()

    def _release_counterpart(self) -> None:
        other = self.counterpart
        self.counterpart = None
        if other is not None:
            other.close(CLOSE_NORMAL, "peer disconnected")

    def _detach(self, reason: str | None, code: int | None = None) -> None:
        """Give the slot back (once) and log why."""
        if not self.attached:
            return
        self.attached = False
        self.live.detach(self, reason, code)
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        if reason is not None:
            log.info(
                "detach session=%s role=%s remote=%s reason=%r%s bytes_in=%d bytes_out=%d",
                self.live.id,
                self.role,
                self.remote,
                reason,
                f" code={code}" if code is not None else "",
                self.live.bytes_in,
                self.live.bytes_out,
                extra={"event": "detach", "session": self.live.id, "role": self.role,
                       "remote": self.remote, "reason": reason, "code": code,
                       "bytes_in": self.live.bytes_in, "bytes_out": self.live.bytes_out},
            )  # fmt: skip

    def _finish(self, reason: str | None) -> None:
        if self.state == _CLOSED:
            return
        self.state = _CLOSED
        self._detach(reason)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        if not self.done.done():
            self.done.set_result(None)

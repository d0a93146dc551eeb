"""WebSocket frames, streamed: the relay's hot path, with no I/O.

:class:`FrameForwarder` reads the frames one client sends and writes, for
the other client, the same frames as a server sends them: unmasked, with the
same FIN bit, opcode, boundaries and payload bytes. Payloads are never
reassembled: each chunk is unmasked and passed on as it arrives, so a
message of any size crosses the relay in bounded memory. Control frames
(ping, pong, close) are hop-by-hop and handed to the caller instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

_c_apply_mask: Callable[[Any, bytes], bytes] | None
try:  # The C routine from the websockets library unmasks at memory speed.
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - exercised only without the C extension
    _c_apply_mask = None

try:  # Our own C fast path (_forward.c): runs of whole data frames, re-framed in place.
    from swsrs.wire._forward import forward as _c_forward
except ImportError:  # pragma: no cover - a build without a C compiler
    _c_forward = None  # type: ignore[assignment]
FAST_PATH = _c_forward is not None

# Output for the other client: new bytes, or (fast path) a view of the read buffer.
Chunk = bytes | memoryview

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005
CLOSE_INVALID_DATA: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011

# Close codes a peer may send (RFC 6455 7.4 and the IANA registry): 1000-1003, 1007-1014,
# 3000-4999.
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def _py_apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (RFC 6455 5.3)."""
    if _c_apply_mask is not None:
        return _c_apply_mask(data, mask)
    return _py_apply_mask(data, mask)


class ProtocolError(Exception):
    """The client broke RFC 6455; close it with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame_header(fin: bool, opcode: int, length: int, mask: bytes | None = None) -> bytes:
    """A frame header; unmasked (server to client) unless ``mask`` is given."""
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask else 0
    if length < 126:
        head = struct.pack("!BB", b0, mbit | length)
    elif length < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, length)
    return head + mask if mask else head


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A complete unmasked control frame (server to client)."""
    return frame_header(True, opcode, len(payload)) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    """The body of a close frame; the reason is cut to fit the 125-byte control limit."""
    data = reason.encode()[:123]
    # Do not cut a UTF-8 sequence in half.
    return struct.pack("!H", code) + data.decode(errors="ignore").encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    """Code and reason of a received close frame; raises ``ProtocolError`` when malformed."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


class FrameForwarder:
    """Turns one client's masked frames into unmasked frames for the other client.

    Call :meth:`feed` with bytes as they arrive. Afterwards ``out`` holds the
    bytes to write to the other client (take them and put in a new list),
    ``controls`` the control frames received as ``(opcode, payload)`` and
    ``payload_bytes`` grows by the data payload forwarded. Raises
    :class:`ProtocolError` when the client breaks the protocol.

    ``max_message`` (> 0) caps a message, fragments included, like the
    reference's read limit; ``-1`` means unlimited.

    A close frame ends the stream (RFC 6455 5.5.1): it is checked here (a
    malformed one raises :class:`ProtocolError`), and once one has been read
    ``closed`` is true and nothing after it, in this feed or a later one, is
    parsed or forwarded.
    """

    __slots__ = (
        "_control",
        "_control_op",
        "_fragmented",
        "_head",
        "_mask",
        "_max",
        "_msg_size",
        "_remaining",
        "closed",
        "controls",
        "fast",
        "out",
        "payload_bytes",
        "queued",
    )

    def __init__(self, max_message: int = -1, *, fast: bool = FAST_PATH) -> None:
        self._max = max_message
        self.fast = fast and FAST_PATH  # use the C fast path where it applies
        self._head = b""  # an incomplete frame header carried to the next feed (a copy)
        self._remaining = 0  # payload bytes still to come in the current frame
        self._mask = b""  # the current frame's mask, rotated to the next payload byte
        self._control: bytearray | None = None  # payload of a control frame being read
        self._control_op = 0
        self._fragmented = False  # inside a message whose last frame has not come
        self._msg_size = 0
        self.closed = False  # a close frame was read: the stream has ended
        self.out: list[Chunk] = []
        self.controls: list[tuple[int, bytes]] = []
        self.payload_bytes = 0
        # Frames the relay itself must send toward the *other* client are held
        # here while a data frame to it is half written (see ``mid_frame``).
        self.queued: list[bytes] = []

    @property
    def mid_frame(self) -> bool:
        """Whether a data frame has been started in ``out`` but not finished.

        Nothing else may be written to the other client until it is.
        """
        return self._remaining > 0 and self._control is None

    def send_between_frames(self, frame: bytes) -> bool:
        """Queue ``frame`` for the other client at the next frame boundary.

        Returns ``True`` if it was queued, ``False`` if no frame is half
        written and the caller may write it at once.
        """
        if self.mid_frame:
            self.queued.append(frame)
            return True
        return False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume ``data``.

        When ``data`` is writable, whole data frames are re-framed inside it by
        the C fast path and ``out`` gets *views* of it: the caller must write or
        copy them before ``data`` changes. Nothing else keeps a reference to it.
        """
        if self.closed:
            return
        if self._head:
            data = bytearray(self._head) + data
            self._head = b""
        view = memoryview(data)
        fast = _c_forward if self.fast and not view.readonly else None
        pos = 0
        end = len(data)
        while pos < end:
            remaining = self._remaining
            if fast is not None and not remaining and not self._fragmented:
                # The common case, in C: every whole text/binary message from here on.
                new_pos, out_end, payload = fast(view, pos, end, self._max)
                if out_end > pos:
                    self.out.append(view[pos:out_end])
                    self.payload_bytes += payload
                pos = new_pos
                if pos == end:
                    return
            if remaining:
                take = min(remaining, end - pos)
                mask = self._mask
                chunk = apply_mask(view[pos : pos + take], mask)
                pos += take
                remaining -= take
                self._remaining = remaining
                if take & 3:
                    r = take & 3
                    self._mask = mask[r:] + mask[:r]
                control = self._control
                if control is None:
                    self.out.append(chunk)
                    self.payload_bytes += take
                    if not remaining and self.queued:
                        self.out.extend(self.queued)
                        self.queued.clear()
                else:
                    control += chunk
                    if not remaining:
                        self._end_control(control)
                        if self.closed:
                            return
                continue
            pos = self._header(data, pos, end)
            if pos < 0:
                return

    def _header(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Parse one frame header at ``pos``; return the new position, or -1 if incomplete."""
        if end - pos < 2:
            self._head = bytes(data[pos:end])
            return -1
        b0 = data[pos]
        b1 = data[pos + 1]
        # Judge what the first two bytes already say before waiting for the rest.
        if not b1 & 0x80:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if b0 & 0x70:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        length = b1 & 0x7F
        start = pos + 2
        if length == 126:
            size = 8
        elif length == 127:
            size = 14
        else:
            size = 6
        if end - pos < size:
            self._head = bytes(data[pos:end])
            return -1
        if length == 126:
            (length,) = struct.unpack_from("!H", data, start)
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, start)
            if length >> 63:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "frame length has the top bit set")
        mask_at = pos + size - 4
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        mask = bytes(data[mask_at : mask_at + 4])
        if opcode & 0x8:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown control opcode {opcode}")
            if not fin or length > 125:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame")
            self._mask = mask
            self._remaining = length
            control = bytearray()
            self._control = control
            self._control_op = opcode
            if not length:
                self._end_control(control)
                if self.closed:
                    return -1
            return pos + size
        if opcode == OP_CONT:
            if not self._fragmented:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            self._msg_size += length
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragmented:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            self._msg_size = length
        else:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown data opcode {opcode}")
        if 0 < self._max < self._msg_size:
            raise ProtocolError(CLOSE_TOO_BIG, f"message exceeds {self._max} bytes")
        # Valid: only now does the frame become the current one.
        self._mask = mask
        self._remaining = length
        self._fragmented = not fin
        self.out.append(frame_header(fin, opcode, length))
        return pos + size

    def _end_control(self, payload: bytearray) -> None:
        self._control = None
        if self._control_op == OP_CLOSE:
            self.closed = True  # nothing after it counts, whether it is well-formed or not
            parse_close(bytes(payload))  # a malformed one raises ProtocolError
        self.controls.append((self._control_op, bytes(payload)))

"""The swsrs peer protocol as a state machine, without I/O.

One :class:`PeerProtocol` is one end of a tunnel, at the level of WebSocket
messages. The layer that owns the socket feeds it what arrives
(:meth:`~PeerProtocol.receive_message`, :meth:`~PeerProtocol.receive_close`)
and what the application does (:meth:`~PeerProtocol.send_data`,
:meth:`~PeerProtocol.send_eof`, :meth:`~PeerProtocol.delivered`,
:meth:`~PeerProtocol.delivered_eof`, :meth:`~PeerProtocol.fail`); it then
collects :meth:`~PeerProtocol.data_to_send` (messages and a close) and
:meth:`~PeerProtocol.events_received` (:mod:`swsrs.peer.events`). Nothing
here blocks, sleeps or touches a socket, so every interleaving can be tested
directly (``tests/test_peer_protocol.py``).

The wire (``docs/peer-protocol.md``): after the relay's ``paired`` signal
names a counterpart that speaks ``swsrs.v1``, binary messages are data and
text messages are JSON control messages between the two peers:

- ``{"type": "eos", "sent": N}`` — my input ended after N bytes;
- ``{"type": "ack", "delivered": N}`` — N of your bytes are written where
  they go (sent now and then, for progress and, later, for resume);
- ``{"type": "done", "delivered": N}`` — all N of your bytes and your end of
  stream are delivered (output flushed and closed);
- ``{"type": "abort", "reason": "…"}`` — I fail; say this reason;
- ``{"type": "text", "data": "…"}`` — a text message of the application's
  (text frames are the control channel, so text data travels inside one).

Sizes count bytes of binary data and characters of text data.

A side whose input has ended and been confirmed (``done``), and which has
confirmed the other's end, is finished: it closes with 1000. Only that is a
clean end; every other end carries its cause in words.
"""

from __future__ import annotations

import json
import secrets
from enum import Enum

from swsrs.peer import ends, resume
from swsrs.peer.events import (
    Acknowledged,
    Away,
    Close,
    Data,
    Ended,
    EndOfStream,
    Event,
    Outgoing,
    Paired,
    Resumed,
    Waiting,
)
from swsrs.wire import subprotocol

ACK_INTERVAL = 1024 * 1024  # an "ack" at least every this many delivered bytes
CLOSE_DONE = 1000
CLOSE_FAILED = 1011  # internal error: this side failed (the reason says how)
CLOSE_PROTOCOL = 1002


class State(Enum):
    WAITING = "waiting"  # attached; the other side is not there yet
    OPEN = "open"  # paired: data flows
    AWAY = "away"  # the connection dropped; the driver reattaches, then both resume
    ENDED = "ended"


class ProtocolUsageError(RuntimeError):
    """The application called the protocol at the wrong time (a bug in the caller)."""


class PeerProtocol:
    """One end of a tunnel. ``selected`` is the subprotocol the relay chose on the upgrade."""

    def __init__(
        self,
        selected: str | None,
        features: frozenset[str] = frozenset(),
        *,
        resume_buffer: int = resume.DEFAULT_BUFFER,
        stream_id: str | None = None,
    ) -> None:
        self.features = features  # what we offered beyond swsrs.v1 ("resume": see resume.py)
        self.state = State.WAITING
        self.paired: Paired | None = None
        self.ended: Ended | None = None
        self.sent = 0  # data bytes we sent
        self.received = 0  # data bytes that arrived
        self.delivered_bytes = 0  # of those, written where they go (our side)
        self.acknowledged = 0  # of ours, written where they go (the other side)
        self.eof_sent = False
        self.eof_received = False
        self._confirmed_eof = False  # our "done" sent
        self._eof_confirmed = False  # their "done" received
        self._last_ack = 0
        self._out: list[Outgoing] = []
        self._events: list[Event] = []
        # Resume: ours and theirs, what we keep to resend, and whether we wait for theirs.
        self.stream_id = stream_id or secrets.token_hex(8)
        self.their_stream: str | None = None
        self.replay = resume.ReplayBuffer(resume_buffer) if "resume" in features else None
        self.resuming = False
        self._pairings = 0
        self._ack_every = resume.RESUME_ACK_INTERVAL  # at most a quarter of their replay buffer
        if selected != subprotocol.SUBPROTOCOL:
            # A relay that knows no signals: no pairing news, raw bytes, as before.
            self._pair(Paired(None, signalled=False))

    # -- what the driver collects ------------------------------------------------------

    def data_to_send(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def confirmed(self) -> bool:
        """Paired with a counterpart that confirms delivery (end-of-stream travels)."""
        return self.paired is not None and self.paired.confirmed

    @property
    def resumable(self) -> bool:
        """Paired with a counterpart that resumes after a drop (both offered ``resume``)."""
        return self.paired is not None and "resume" in (self.paired.features or ())

    @property
    def can_end(self) -> bool:
        """Our end-of-stream may be sent now (a full replay buffer does not hold it back)."""
        return self.state is State.OPEN and not self.eof_sent and not self.resuming

    @property
    def can_send(self) -> bool:
        """Data may be sent now: paired, not ended or away, not waiting for the other side's
        position after a reconnect, and the replay buffer not full (backpressure)."""
        if self.state is not State.OPEN or self.eof_sent or self.resuming:
            return False
        return not (self.resumable and self.replay is not None and self.replay.full)

    # -- what arrives ----------------------------------------------------------------------

    def receive_message(self, message: bytes | str) -> None:
        """A WebSocket message from the relay (bytes: binary, str: text)."""
        if self.state is State.ENDED:
            return
        if self.state is State.WAITING:
            self._signal(message)
        elif not self.confirmed:
            self.received += len(message)
            self._events.append(Data(message))
        elif isinstance(message, str):
            self._control(message)
        elif self.eof_received:
            self._violation("data arrived after the other side's end-of-stream")
        else:
            self.received += len(message)
            self._events.append(Data(message))

    def receive_close(self, code: int | None, reason: str = "") -> None:
        """The connection closed (``code`` None: lost without a close frame)."""
        if self.state in (State.ENDED, State.AWAY):
            return
        if self.resumable and resume.worth_resuming(code, reason):
            # What was queued is in the replay buffer or said again by the resume message.
            self._out.clear()
            self.state = State.AWAY
            self._events.append(Away(resume.away_cause(code, reason)))
            return
        if self._pairings and self.state is State.WAITING and reason.startswith("peer did not"):
            # Back after a drop, the other side was not: the relay's peer-wait ran out.
            self._end(Ended(False, ends.not_back(reason), code))
            return
        if self.confirmed and ends.is_peer_left(code, reason):
            cause = ends.LEFT_BEFORE_CONFIRMING if self.eof_received else ends.VANISHED
            self._end(Ended(False, cause, code))
        elif self.paired is not None and not self.confirmed and code in (1000, 1005):
            # A raw counterpart ends the tunnel by leaving: as before, that is the end.
            self._end(Ended(True, "", code))
        else:
            self._end(Ended(False, ends.relay_close(code, reason), code))

    def _signal(self, message: bytes | str) -> None:
        obj = subprotocol.decode(message) if isinstance(message, str) else None
        if obj is None:
            self._violation("the relay sent data before its pairing signal")
            return
        if obj["type"] == subprotocol.WAITING:
            wait = obj.get("wait")
            self._events.append(Waiting(float(wait) if isinstance(wait, int | float) else 0.0))
        elif obj["type"] == subprotocol.PAIRED:
            theirs = obj.get("features")
            if isinstance(theirs, list):
                common = self.features & {f for f in theirs if isinstance(f, str)}
                self._pair(Paired(frozenset(common)))
            else:
                self._pair(Paired(None))

    def _pair(self, paired: Paired) -> None:
        again = self._pairings > 0
        self._pairings += 1
        if again and "resume" not in (paired.features or ()):
            self._end(Ended(False, ends.CUT_NO_RESUME), Close(CLOSE_DONE))
            return
        self.paired = paired
        self.state = State.OPEN
        self._events.append(paired)
        if self.resumable:
            # Where we are; nothing goes out before theirs arrives (after a reconnect the
            # gap is resent then; on the first pairing it proves who the other side is).
            self.resuming = True
            self._out.append(json.dumps({
                "type": "resume", "stream": self.stream_id, "seen": self.their_stream,
                "received": self.received, "eos": self.eof_received,
                "done": self._eof_confirmed, "window": self.replay.limit if self.replay else 0,
            }))  # fmt: skip

    def reattached(self, selected: str | None) -> None:
        """The driver is attached again after :class:`~swsrs.peer.events.Away`."""
        if self.state is not State.AWAY:
            raise ProtocolUsageError(f"reattached while {self.state.value}")
        if selected != subprotocol.SUBPROTOCOL:
            self._end(Ended(False, ends.CUT_NO_RESUME), Close(CLOSE_DONE))
            return
        self.state = State.WAITING

    def give_up(self, cause: str) -> None:
        """The driver could not reattach (its budget ran out, or the relay refused for good)."""
        if self.state is not State.ENDED:
            self._end(Ended(False, cause))

    def _control(self, text: str) -> None:
        obj = subprotocol.decode(text)
        if obj is None:
            self._violation("unreadable control message from the other side")
            return
        kind = obj["type"]
        if kind == "eos":
            sent = obj.get("sent")
            if self.eof_received:
                self._violation("a second end-of-stream")
            elif sent != self.received:
                self._violation(f"the other side sent {sent} bytes but {self.received} arrived")
            else:
                self.eof_received = True
                self._events.append(EndOfStream())
        elif kind in ("ack", "done"):
            delivered = obj.get("delivered")
            if not isinstance(delivered, int) or not 0 <= delivered <= self.sent:
                self._violation(f"the other side acknowledged {delivered!r} of {self.sent} bytes")
                return
            self.acknowledged = max(self.acknowledged, delivered)
            if self.replay is not None:
                self.replay.release(self.acknowledged)
            self._events.append(Acknowledged(self.acknowledged))
            if kind == "done":
                if not self.eof_sent or delivered != self.sent:
                    self._violation("the other side confirmed an end-of-stream never sent")
                    return
                self._eof_confirmed = True
                self._finish_if_complete()
        elif kind == "abort":
            reason = str(obj.get("reason") or "no reason given")
            self._end(Ended(False, f"the other side failed: {reason}"), Close(CLOSE_DONE))
        elif kind == "text":
            data = obj.get("data")
            if not isinstance(data, str) or self.eof_received:
                self._violation("a malformed text message, or one after end-of-stream")
                return
            self.received += len(data)
            self._events.append(Data(data))
        elif kind == "resume" and self.resumable:
            self._resume(obj)
        elif kind == subprotocol.PAIRED:
            pass  # the relay's signal again: nothing changes for this pairing
        # Unknown types are ignored: later versions may add control messages.

    # -- what the application does ---------------------------------------------------------

    def send_data(self, data: bytes) -> None:
        """Queue ``data`` as one binary message. Only once paired, before ``send_eof``."""
        if not self.can_send:
            raise ProtocolUsageError(f"cannot send data now (state {self.state.value})")
        self.sent += len(data)
        self._out.append(data)
        if self.replay is not None and self.resumable:
            self.replay.add(self.sent, len(data), data)

    def send_text(self, text: str) -> None:
        """Queue one text message (inside a control message when the other side is ours)."""
        if not self.can_send:
            raise ProtocolUsageError(f"cannot send data now (state {self.state.value})")
        self.sent += len(text)
        wire = json.dumps({"type": "text", "data": text}) if self.confirmed else text
        self._out.append(wire)
        if self.replay is not None and self.resumable:
            self.replay.add(self.sent, len(text), wire)

    def send_eof(self) -> None:
        """Our input ended. A raw counterpart knows no end-of-stream: the tunnel ends here."""
        if not self.can_end:
            raise ProtocolUsageError(f"cannot end the stream now (state {self.state.value})")
        self.eof_sent = True
        if not self.confirmed:
            self._end(Ended(True, "", CLOSE_DONE), Close(CLOSE_DONE))
            return
        self._out.append(json.dumps({"type": "eos", "sent": self.sent}))

    def delivered(self, n: int) -> None:
        """``n`` more received bytes are written where they go (stdout, a TCP connection)."""
        self.delivered_bytes += n
        if self.delivered_bytes > self.received:
            raise ProtocolUsageError("delivered more bytes than arrived")
        every = self._ack_every if self.resumable else ACK_INTERVAL
        due = self.delivered_bytes - self._last_ack >= every
        if due and self.confirmed and self.state is State.OPEN:
            self._ack("ack")

    def delivered_eof(self) -> None:
        """Everything received, and the end of the stream, are delivered (output closed)."""
        if not self.eof_received or self.delivered_bytes != self.received:
            raise ProtocolUsageError("end-of-stream delivered before it arrived in full")
        if self.state is State.ENDED or self._confirmed_eof:
            return
        self._confirmed_eof = True
        if self.state is State.OPEN and not self.resuming:
            self._ack("done")
            self._finish_if_complete()
        # Else the resume exchange says it ("done": true is what the other side lacks).

    def fail(self, reason: str) -> None:
        """This side cannot go on (target unreachable, output broken): tell the other side."""
        if self.state is State.ENDED:
            return
        if self.confirmed:
            self._out.append(json.dumps({"type": "abort", "reason": reason}))
        self._end(Ended(False, reason), Close(CLOSE_FAILED, reason))

    # -- internals ---------------------------------------------------------------------------

    def _resume(self, obj: dict[str, object]) -> None:
        """The other side's position: check it is the same stream, resend the gap."""
        stream, seen, received = obj.get("stream"), obj.get("seen"), obj.get("received")
        if seen is not None and seen != self.stream_id:
            self._end(Ended(False, ends.CUT_WE_RESTARTED), Close(CLOSE_DONE))
            return
        if self.their_stream is not None and stream != self.their_stream:
            self._end(Ended(False, ends.CUT_THEY_RESTARTED), Close(CLOSE_DONE))
            return
        self.their_stream = str(stream)
        window = obj.get("window")
        if isinstance(window, int) and window > 0:
            self._ack_every = max(1, min(resume.RESUME_ACK_INTERVAL, window // 4))
        if not self.resuming:
            return  # a stray second one: nothing to do
        if not isinstance(received, int) or not 0 <= received <= self.sent:
            self._violation(f"the other side resumes at {received!r} of {self.sent} units")
            return
        assert self.replay is not None
        gap = self.replay.since(received)
        if gap is None:
            self._end(Ended(False, ends.CUT_GONE), Close(CLOSE_DONE))
            return
        self.replay.release(received)
        self._out.extend(gap)
        if self.eof_sent and not obj.get("eos"):
            self._out.append(json.dumps({"type": "eos", "sent": self.sent}))
        if self._confirmed_eof and not obj.get("done"):
            self._out.append(json.dumps({"type": "done", "delivered": self.delivered_bytes}))
        self.resuming = False
        if self._pairings > 1:
            self._events.append(Resumed(self.sent - received))
        self._finish_if_complete()

    def _ack(self, kind: str) -> None:
        self._last_ack = self.delivered_bytes
        self._out.append(json.dumps({"type": kind, "delivered": self.delivered_bytes}))

    def _finish_if_complete(self) -> None:
        if self._eof_confirmed and self._confirmed_eof:
            self._end(Ended(True, "", CLOSE_DONE), Close(CLOSE_DONE, "done"))

    def _violation(self, what: str) -> None:
        self._end(Ended(False, f"protocol error: {what}"), Close(CLOSE_PROTOCOL, what))

    def _end(self, ended: Ended, close: Close | None = None) -> None:
        self.state = State.ENDED
        self.ended = ended
        if close is not None:
            self._out.append(close)
        self._events.append(ended)

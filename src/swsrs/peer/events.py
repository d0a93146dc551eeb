"""What :class:`~swsrs.peer.protocol.PeerProtocol` reports to the layer that drives it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Waiting:
    """The relay holds our slot; the other side is not there yet (up to ``seconds``)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Paired:
    """The other side is there: data may flow.

    ``features`` are the peer-protocol features both sides speak, or
    ``None`` when the other side (or the relay) speaks raw bytes only: then
    no end-of-stream travels and delivery cannot be confirmed. ``signalled``
    is false when the relay gave no pairing signal at all (a relay that does
    not know ``swsrs.v1``): the other side may not even be there yet.
    """

    features: frozenset[str] | None
    signalled: bool = True

    @property
    def confirmed(self) -> bool:
        """Whether end-of-stream and delivery are confirmed end to end."""
        return self.features is not None


@dataclass(frozen=True, slots=True)
class Data:
    """A message of the other side's data (``str`` only from a raw peer's text message)."""

    payload: bytes | str


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The other side's input ended; every byte of it has arrived."""


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The other side has written this many of our bytes to where they go."""

    delivered: int


@dataclass(frozen=True, slots=True)
class Ended:
    """The tunnel is over. ``ok``: every byte both ways was delivered and the end was clean.

    ``cause`` says in words why it ended when it is not ok (empty otherwise);
    ``code`` is the WebSocket close code that ended it, if one did.
    """

    ok: bool
    cause: str = ""
    code: int | None = None


@dataclass(frozen=True, slots=True)
class Away:
    """The connection dropped; both sides come back and resume (the driver reattaches)."""

    cause: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """Both sides are back: the stream goes on where it broke (``resent`` units sent again)."""

    resent: int


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The driver's news while away: try ``attempt`` failed (``cause``); next in ``delay`` s."""

    attempt: int
    delay: float
    cause: str


@dataclass(frozen=True, slots=True)
class Close:
    """Outgoing: close the WebSocket with this code and reason."""

    code: int
    reason: str = ""


Event = Waiting | Paired | Data | EndOfStream | Acknowledged | Away | Resumed | Reconnecting | Ended
Outgoing = bytes | str | Close

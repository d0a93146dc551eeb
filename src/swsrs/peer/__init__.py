"""The peer protocol, sans I/O: pairing, end-of-stream and delivery between two tunnel ends."""

from swsrs.peer import ends
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
    Reconnecting,
    Resumed,
    Waiting,
)
from swsrs.peer.protocol import PeerProtocol, ProtocolUsageError, State

__all__ = [
    "Acknowledged",
    "Away",
    "Close",
    "Data",
    "EndOfStream",
    "Ended",
    "Event",
    "Outgoing",
    "Paired",
    "PeerProtocol",
    "ProtocolUsageError",
    "Reconnecting",
    "Resumed",
    "State",
    "Waiting",
    "ends",
]

"""The peer protocol, sans I/O: pairing, end-of-stream and delivery between two tunnel ends."""

from swsrs.peer.events import (
    Acknowledged,
    Close,
    Data,
    Ended,
    EndOfStream,
    Event,
    Outgoing,
    Paired,
    Waiting,
)
from swsrs.peer.protocol import PeerProtocol, ProtocolUsageError, State

__all__ = [
    "Acknowledged",
    "Close",
    "Data",
    "EndOfStream",
    "Ended",
    "Event",
    "Outgoing",
    "Paired",
    "PeerProtocol",
    "ProtocolUsageError",
    "State",
    "Waiting",
]

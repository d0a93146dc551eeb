"""swsrs — Simple WebSocket Relay Service.

The public SDK lives at the package root::

    import swsrs
    async with swsrs.AdminClient("https://relay.example.com", token=provider) as admin:
        s = await admin.create()
    conn = await swsrs.dial("https://relay.example.com", s.id, s.initiator_token)
"""

from swsrs._version import __version__
from swsrs.client import (
    AdminClient,
    Connection,
    CreatedSession,
    SessionStatus,
    accept,
    connect,
    dial,
    discover,
    load_cached_token,
    open_socket,
)
from swsrs.errors import (
    AuthDisabled,
    ConfigError,
    Forbidden,
    HandshakeTimeout,
    HTTPStatusError,
    NotFound,
    PeerGone,
    RelayUnreachable,
    SlotTaken,
    SwsrsError,
    Unauthorized,
)

__all__ = [
    "AdminClient",
    "AuthDisabled",
    "ConfigError",
    "Connection",
    "CreatedSession",
    "Forbidden",
    "HTTPStatusError",
    "HandshakeTimeout",
    "NotFound",
    "PeerGone",
    "RelayUnreachable",
    "SessionStatus",
    "SlotTaken",
    "SwsrsError",
    "Unauthorized",
    "__version__",
    "accept",
    "connect",
    "dial",
    "discover",
    "load_cached_token",
    "open_socket",
]

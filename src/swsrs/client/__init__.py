"""The swsrs client SDK: admin client, tunnels, and blocking sockets."""

from swsrs.client.admin import AdminClient, CreatedSession, SessionStatus
from swsrs.client.auth import discover, load_cached_token
from swsrs.client.blocking import open_socket
from swsrs.client.connection import Connection, accept, connect, dial

__all__ = [
    "AdminClient",
    "Connection",
    "CreatedSession",
    "SessionStatus",
    "accept",
    "connect",
    "dial",
    "discover",
    "load_cached_token",
    "open_socket",
]

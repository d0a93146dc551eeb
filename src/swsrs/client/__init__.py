"""The swsrs client SDK: admin client, tunnels, blocking sockets, and auth helpers."""

from swsrs.client.admin import AdminClient, CreatedSession, SessionStatus
from swsrs.client.attach import accept, connect, dial
from swsrs.client.auth import (
    DeviceAuthorization,
    RefreshingTokenProvider,
    device_login,
    discover,
    refresh,
)
from swsrs.client.blocking import open_socket
from swsrs.client.connection import Connection
from swsrs.client.tokens import FileTokenStore, Token, default_credentials_path, load_cached_token

__all__ = [
    "AdminClient",
    "Connection",
    "CreatedSession",
    "DeviceAuthorization",
    "FileTokenStore",
    "RefreshingTokenProvider",
    "SessionStatus",
    "Token",
    "accept",
    "connect",
    "default_credentials_path",
    "device_login",
    "dial",
    "discover",
    "load_cached_token",
    "open_socket",
    "refresh",
]

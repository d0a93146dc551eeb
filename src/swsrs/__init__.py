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
    DeviceAuthorization,
    FileTokenStore,
    RefreshingTokenProvider,
    SessionStatus,
    Token,
    accept,
    connect,
    default_credentials_path,
    device_login,
    dial,
    discover,
    load_cached_token,
    open_socket,
    refresh,
)
from swsrs.errors import (
    AuthDisabled,
    ConfigError,
    DeviceLoginError,
    Forbidden,
    HandshakeTimeout,
    HTTPStatusError,
    LoginDenied,
    LoginExpired,
    LoginRequired,
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
    "DeviceAuthorization",
    "DeviceLoginError",
    "FileTokenStore",
    "Forbidden",
    "HTTPStatusError",
    "HandshakeTimeout",
    "LoginDenied",
    "LoginExpired",
    "LoginRequired",
    "NotFound",
    "PeerGone",
    "RefreshingTokenProvider",
    "RelayUnreachable",
    "SessionStatus",
    "SlotTaken",
    "SwsrsError",
    "Token",
    "Unauthorized",
    "__version__",
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

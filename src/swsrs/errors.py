"""Every exception swsrs raises on purpose, in one place.

The SDK raises these; the CLI turns them into one line on stderr and an
exit code. ``SwsrsError`` is the root so callers can catch everything.
"""

from __future__ import annotations


class SwsrsError(Exception):
    """Base class for all swsrs errors."""


class ConfigError(SwsrsError):
    """A bad flag, environment variable or combination (CLI exit code 2)."""


class RelayUnreachable(SwsrsError):
    """The relay could not be reached (DNS, TCP, TLS, or timeout)."""


class HandshakeTimeout(RelayUnreachable):
    """The WebSocket handshake did not complete in time."""


class HTTPStatusError(SwsrsError):
    """The relay answered with an unexpected HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFound(HTTPStatusError):
    """The session does not exist, has expired or was deleted (404)."""


class Unauthorized(HTTPStatusError):
    """The token was missing or refused (401)."""


class Forbidden(HTTPStatusError):
    """The token is valid but lacks a scope, or the Origin is not allowed (403)."""


class SlotTaken(HTTPStatusError):
    """Another connection already holds this slot of the session (409)."""


class StoreError(SwsrsError):
    """The session store cannot be used: unreachable, locked, read-only or corrupt.

    At start the relay exits with its message; later, the admin API answers
    ``503`` with it and the data plane refuses new attaches with ``503``.
    """


class AuthDisabled(SwsrsError):
    """Discovery answered 404: the relay runs with ``--no-auth``."""


class PeerGone(SwsrsError):
    """The tunnel has no more to give: the counterpart ended its stream or left, or the
    relay closed the tunnel. ``clean`` is true only for a confirmed end-of-stream or a
    clean end; the message says the cause otherwise."""

    def __init__(self, message: str, code: int | None = None, *, clean: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.clean = clean


class TunnelFailed(SwsrsError):
    """A tunnel ended without delivering everything (the message names the cause)."""


class LoginRequired(SwsrsError):
    """No usable admin credentials (none saved, or expired beyond refresh): run ``swsrs auth``."""


class DeviceLoginError(SwsrsError):
    """The identity provider ended a device login (RFC 8628) with an error."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


class LoginDenied(DeviceLoginError):
    """The user (or the IdP) refused the device login: ``access_denied``."""


class LoginExpired(DeviceLoginError):
    """The device code expired before the user approved it: ``expired_token``."""


def os_reason(exc: OSError) -> str:
    """An OS error in the words of ``strerror(3)``: ``connection refused``, not asyncio's
    ``Connect call failed ('127.0.0.1', 1)`` or aiohttp's ``ssl:default`` wording."""
    import os
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).lower().replace("_", " ")
    if exc.errno and exc.errno > 0:
        try:
            text = os.strerror(exc.errno)
        except ValueError:
            text = ""
        if text and not text.startswith("Unknown error"):
            return text[0].lower() + text[1:]
    return exc.strerror or str(exc) or type(exc).__name__

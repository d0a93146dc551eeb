"""URL helpers shared by the SDK and the CLI: ``http(s)`` → ``ws(s)`` and relay paths."""

from __future__ import annotations

from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from swsrs.errors import ConfigError

_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_HTTP = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def _split(url: str) -> SplitResult:
    bad = f"invalid relay URL {url!r} (want http(s):// or ws(s)://host[:port])"
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"{bad}: {exc}") from None
    if parts.scheme.lower() not in _WS or not parts.hostname or port == 0:
        raise ConfigError(bad)
    return parts


def to_ws_base(url: str) -> str:
    """Normalise a relay base URL to ``ws://`` or ``wss://`` without a trailing slash."""
    p = _split(url)
    return urlunsplit((_WS[p.scheme.lower()], p.netloc, p.path.rstrip("/"), "", ""))


def to_http_base(url: str) -> str:
    """Normalise a relay base URL to ``http://`` or ``https://`` without a trailing slash."""
    p = _split(url)
    return urlunsplit((_HTTP[p.scheme.lower()], p.netloc, p.path.rstrip("/"), "", ""))


def relay_url(base: str, session_id: str) -> str:
    """The data-plane URL of a session: ``ws(s)://host/relay/{id}``.

    A base that already ends in ``/relay/{id}`` (as ``initiator_url`` does)
    is accepted as it is.
    """
    ws = to_ws_base(base)
    if "/relay/" in urlsplit(ws).path:
        return ws
    return f"{ws}/relay/{quote(session_id, safe='')}"

"""The ``Origin`` allowlist (SPEC 6), shared by the WebSocket check and CORS.

One allowlist drives both the WebSocket Origin check (403 before the
upgrade, see :func:`origin_refusal`) and the CORS headers (see
:func:`swsrs.server.control.cors.cors_middleware`). Patterns glob on the
lowercased ``host[:port]`` of the ``Origin``, like the Go reference's ``path.Match`` on the origin's
host, with these rules:

- ``*`` matches exactly one non-empty DNS label, or one port: ``*.example.com``
  matches ``a.example.com`` but neither ``example.com`` nor ``a.b.example.com``;
  ``localhost:*`` matches ``localhost:3000``. A pattern that is only ``*``
  allows every origin. ``?`` matches one character other than ``.``.
- The port is part of the match: ``app.example.com`` matches
  ``https://app.example.com`` but not ``https://app.example.com:8443``, and
  ``localhost:*`` does not match a port-less ``http://localhost``. A default
  port written out (``https://h:443``) counts as no port, as browsers send it.
- The scheme is not matched (``http`` and ``https`` alike).
- Same origin is always allowed: an ``Origin`` whose ``host[:port]`` equals
  the request's ``Host`` (so an empty allowlist means same-origin only).
- A malformed ``Origin`` (``null``, no scheme, a path, garbage) is never allowed.
- No ``Origin`` header at all is not a browser: the WebSocket check lets it
  through, and CORS adds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")
_HOSTNAME = re.compile(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*\.?")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def origin_host(origin: str) -> str | None:
    """The lowercased ``host[:port]`` of a serialized origin, or ``None`` if it is malformed.

    A default port written out is dropped (``https://h:443`` → ``h``).
    """
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or not _SCHEME.fullmatch(scheme) or not rest:
        return None
    if rest.endswith("/"):  # tolerated; browsers never send it
        rest = rest[:-1]
    if any(c in rest for c in "/?#@\\ "):
        return None
    if rest.startswith("["):
        host, bracket, after = rest.partition("]")
        host += bracket
        if not _IPV6.fullmatch(host):
            return None
        if after and not after.startswith(":"):
            return None
        port = after[1:] if after else None
    else:
        host, colon, port_s = rest.partition(":")
        port = port_s if colon else None
        if not _HOSTNAME.fullmatch(host):
            return None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) <= 65535:
            return None
        if _DEFAULT_PORTS.get(scheme) == port:
            port = None
    return host if port is None else f"{host}:{port}"


_PATTERN = re.compile(r"[a-z0-9_\-.*?]+(:[0-9*?]+)?|\[[0-9a-f:.*?]+\](:[0-9*?]+)?")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` can never match an origin's ``host[:port]``, or ``None`` if it can."""
    p = pattern.strip().lower()
    if "://" in p:
        host = p.split("://", 1)[1].rstrip("/")
        return f"{pattern!r} is a URL; write the host pattern {host!r}"
    if not _PATTERN.fullmatch(p):
        return f"{pattern!r} is not a host[:port] pattern (e.g. app.example.com, *.example.com)"
    return None


def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern.strip().lower():
        if ch == "*":
            out.append(r"[^.:]+")
        elif ch == "?":
            out.append(r"[^.:]")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


@dataclass(frozen=True)
class OriginPolicy:
    """The ``--allowed-origins`` allowlist; pure, so it is tested without a server."""

    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _any: bool = field(init=False, repr=False, compare=False)

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        pats = tuple(p.strip().lower() for p in patterns if p.strip())
        object.__setattr__(self, "patterns", pats)
        object.__setattr__(self, "_any", "*" in pats)
        object.__setattr__(self, "_compiled", tuple(_compile(p) for p in pats if p != "*"))

    def allows(self, origin: str, host: str | None) -> bool:
        """Is a request carrying ``Origin: origin`` and ``Host: host`` allowed?"""
        oh = origin_host(origin)
        if oh is None:
            return False
        if self._any:
            return True
        if host and oh == _normal_host(host):
            return True
        return any(p.fullmatch(oh) for p in self._compiled)


def _normal_host(host: str) -> str:
    h = host.strip().lower()
    if h.endswith((":80", ":443")):  # browsers leave default ports out of Origin
        h = h.rpartition(":")[0]
    return h


def origin_refusal(policy: OriginPolicy, headers: Mapping[str, str]) -> str | None:
    """For the data plane: ``None`` if the upgrade may go on, else the 403 reason.

    No ``Origin`` header means the client is not a browser: allowed.
    """
    origin = headers.get("Origin")
    if origin is None:
        return None
    if policy.allows(origin, headers.get("Host")):
        return None
    return f"origin {origin[:200]!r} is not allowed (see --allowed-origins)"

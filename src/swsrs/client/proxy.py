"""Outbound calls through an HTTP proxy: which proxy (if any) for a URL, and the tunnel.

The choice follows curl, pip and git: an explicit proxy (``--proxy``, the
SDK's ``proxy=``) wins, an empty one means none; else ``https_proxy`` /
``HTTPS_PROXY`` for ``https://`` and ``wss://``, ``http_proxy`` /
``HTTP_PROXY`` for ``http://`` and ``ws://`` (lower case first), then
``all_proxy`` / ``ALL_PROXY``. ``no_proxy`` / ``NO_PROXY`` (a comma-separated
list of host names, which also match their subdomains, IP addresses, CIDR
blocks, optional ``:port``, or ``*``) is honoured for both. Loopback gets no
exception of its own: put ``127.0.0.1,localhost`` in ``NO_PROXY`` for that.

Every connection to a proxied host is an HTTP ``CONNECT`` tunnel (as
browsers do for WebSockets), with TLS on top for ``https``/``wss``; so the
relay sees the same requests with or without a proxy, and the proxy's
credentials (``http://user:pass@host:port``, sent as Basic) never leave the
tunnel's first request. All three clients (admin API, discovery and device
login, the data plane) get their ``aiohttp.ClientSession`` from
:func:`client_session`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace

from swsrs import _version
from swsrs.errors import ConfigError, Forbidden, RelayUnreachable, os_reason

_SECURE = {"https", "wss"}
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_MAX_HEAD = 16 * 1024


class ProxyRefused(Forbidden):
    """The proxy refused the tunnel (``407``, ``403`` or another ``4xx``): retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where it is, its Basic credentials, and where it was configured."""

    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization value, or None
    source: str  # "--proxy", "HTTPS_PROXY", …: named in error messages

    @property
    def shown(self) -> str:
        """``http://host:port``: the proxy without its credentials, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(text: str, source: str = "--proxy") -> Proxy:
    """``http://[user:pass@]host[:port]`` (or ``host:port``; port 1080 by default, as curl)."""
    spec = text.strip()
    if "://" not in spec:
        spec = "http://" + spec
    bad = f"invalid proxy URL in {source} (want http://[user:password@]host:port)"
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError:
        raise ConfigError(bad) from None
    if parts.scheme.lower() != "http":
        raise ConfigError(f"{bad}: only http:// proxies are supported, not {parts.scheme}://")
    if not parts.hostname or port == 0 or parts.path.strip("/") or parts.query:
        raise ConfigError(bad)
    authorization = None
    if parts.username is not None:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode()).decode("ascii")
    return Proxy(parts.hostname, port or 1080, authorization, source)


def _env(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for key in (name.lower(), name.upper()):
        value = env.get(key, "").strip()
        if value:
            return value, key
    return None


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY``'s value ``no_proxy`` says to reach ``host:port`` directly."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        want_port = None
        if entry.startswith("["):  # [::1] or [::1]:8080
            entry, _, rest = entry[1:].partition("]")
            want_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
            entry, _, want_port = entry.partition(":")
        if want_port and want_port != str(port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip("*").lstrip(".").rstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def proxy_for(
    url: str, proxy: str | None = None, env: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy to reach ``url`` through, or ``None`` for a direct connection.

    ``proxy`` is an explicit proxy URL (``""``: none, whatever the environment
    says); ``None`` reads the environment (see the module's documentation).
    """
    env = os.environ if env is None else env
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if proxy is not None:
        if not proxy.strip():
            return None
        spec, source = proxy, "--proxy"
    else:
        found = _env(env, "https_proxy" if scheme in _SECURE else "http_proxy") or _env(
            env, "all_proxy"
        )
        if found is None:
            return None
        spec, source = found
    no_proxy = _env(env, "no_proxy")
    port = parts.port or _DEFAULT_PORTS.get(scheme, 80)
    if no_proxy and parts.hostname and bypassed(parts.hostname, port, no_proxy[0]):
        return None
    return parse_proxy(spec, source)


async def open_tunnel(proxy: Proxy, host: str, port: int) -> socket.socket:
    """A socket connected to ``host:port`` through ``proxy`` (``CONNECT``), ready for TLS or HTTP.

    Raises :class:`ProxyRefused` when the proxy says no (4xx), and
    :class:`~swsrs.errors.RelayUnreachable` when the proxy cannot be reached or
    cannot reach the target (5xx).
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RelayUnreachable(f"cannot reach the proxy {proxy.shown}: {os_reason(exc)}") from None
    sock: socket.socket | None = None
    error: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            break
        except OSError as exc:
            sock.close()
            sock, error = None, exc
        except BaseException:
            sock.close()
            raise
    if sock is None:
        why = os_reason(error) if error else "no address"
        raise RelayUnreachable(f"cannot reach the proxy {proxy.shown}: {why}")
    try:
        await _connect(loop, sock, proxy, host, port)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: Proxy, host: str, port: int
) -> None:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}",
             f"User-Agent: swsrs/{_version.__version__}"]  # fmt: skip
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    try:
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:  # nothing follows a 200 before we speak
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk or len(head) > _MAX_HEAD:
                raise ConnectionError("the proxy closed the connection without an answer")
            head += chunk
    except OSError as exc:
        raise RelayUnreachable(f"cannot reach the proxy {proxy.shown}: {os_reason(exc)}") from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(" ", 2)
    try:
        status = int(fields[1])
    except (IndexError, ValueError):
        raise RelayUnreachable(
            f"the proxy {proxy.shown} answered CONNECT with {status_line[:80]!r}"
        ) from None
    if status == 200:
        return
    reason = fields[2].strip() if len(fields) > 2 and fields[2].strip() else _phrase(status)
    said = f"{status} {reason}"
    if 400 <= status < 500:
        raise ProxyRefused(status, f"the proxy {proxy.shown} refused the connection: {said}"
                           f"{_hint(proxy, status, target)}")  # fmt: skip
    raise RelayUnreachable(f"the proxy {proxy.shown} could not connect to {target}: {said}")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _hint(proxy: Proxy, status: int, target: str) -> str:
    if status == 407 and proxy.authorization:
        return f" (check the user and password in {proxy.source})"
    if status == 407:
        return f" (it wants a user and password: {proxy.source}=http://user:password@host:port)"
    if status == 403:
        return f" (it does not allow tunnels to {target})"
    return ""


class ProxyConnector(aiohttp.TCPConnector):
    """A connector that reaches each host directly or through a ``CONNECT`` tunnel,
    as :func:`proxy_for` decides for that host."""

    def __init__(self, proxy: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._proxy_spec = proxy

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> ResponseHandler:
        proxy = proxy_for(str(req.url), self._proxy_spec)
        host = req.url.raw_host
        if proxy is None or host is None or req.port is None:
            return await super()._create_connection(req, traces, timeout)
        sock = await open_tunnel(proxy, host, req.port)
        context: _ssl.SSLContext | None = self._get_ssl_context(req) if req.is_ssl() else None
        server_hostname = (getattr(req, "server_hostname", None) or host) if context else None
        try:  # TLS errors become aiohttp's, as on a direct connection
            _, protocol = await self._wrap_existing_connection(
                self._factory,
                sock=sock,
                ssl=context,
                server_hostname=server_hostname,
                req=req,
                timeout=timeout,
            )
        except BaseException:
            sock.close()
            raise
        return protocol


def client_session(proxy: str | None = None, **kwargs: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` whose connections follow :func:`proxy_for` per host.

    ``proxy``: an explicit proxy URL, ``""`` for none, ``None`` for the environment's.
    A malformed explicit proxy is a :class:`~swsrs.errors.ConfigError` here and now.
    """
    if proxy:
        parse_proxy(proxy)
    return aiohttp.ClientSession(connector=ProxyConnector(proxy), **kwargs)

"""Which address a request comes from: the socket's peer, or, behind ``--trusted-proxies``,
the client those proxies name in ``Forwarded`` / ``X-Forwarded-For``.

Without ``--trusted-proxies`` the headers are ignored: anyone can write them.
With it, the chain is read from the right (the hop nearest the relay): every
address that is a trusted proxy is skipped, and the first one that is not is
the client. A malformed entry stops the walk at the last trusted hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    t = text.strip().strip('"')
    if t.startswith("["):  # [v6] or [v6]:port
        t = t[1 : t.find("]")] if "]" in t else ""
    elif t.count(":") == 1:  # v4:port
        t = t.partition(":")[0]
    try:
        addr = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` of each element of a ``Forwarded`` header (RFC 7239), in order."""
    out = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, v = pair.partition("=")
            if name.strip().lower() == "for":
                out.append(v)
    return out


class TrustedProxies:
    """``--trusted-proxies``: CIDRs (or single addresses) whose forwarding headers count."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: tuple[str, ...] = ()) -> None:
        nets: list[Network] = []
        for c in cidrs:
            try:
                nets.append(ipaddress.ip_network(c.strip(), strict=False))
            except ValueError:
                raise ValueError(f"not an address or CIDR: {c!r}") from None
        self.networks = tuple(nets)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, addr: Address) -> bool:
        return any(addr in n for n in self.networks)

    def client(self, peer: str, headers: Mapping[str, str] | None) -> str:
        """The client's address for a connection from ``peer`` (an IP) with ``headers``."""
        if not self.networks or headers is None:
            return peer
        hop = _address(peer)
        if hop is None or not self.trusts(hop):
            return peer
        getall = getattr(headers, "getall", None)
        if "Forwarded" in headers:
            raw = getall("Forwarded") if getall else [headers["Forwarded"]]
            chain = [a for v in raw for a in _forwarded_for(v)]
        elif "X-Forwarded-For" in headers:
            raw = getall("X-Forwarded-For") if getall else [headers["X-Forwarded-For"]]
            chain = [a for v in raw for a in v.split(",")]
        else:
            return peer
        client = hop
        for entry in reversed(chain):
            addr = _address(entry)
            if addr is None:
                break
            client = addr
            if not self.trusts(addr):
                break
        return str(client)


def host_of(remote: str) -> str:
    """``1.2.3.4`` of ``1.2.3.4:5678``, ``::1`` of ``[::1]:5678`` (as format_addr writes)."""
    if remote.startswith("["):
        return remote[1 : remote.find("]")]
    if remote.count(":") != 1:  # a bare IPv6 address, or no port at all
        return remote
    return remote.partition(":")[0]

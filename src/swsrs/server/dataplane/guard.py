"""The front door's limits on connections: ``--max-conns`` and ``--header-timeout``.

:class:`HttpGuard` stands between a connection and aiohttp (which has no
header-read timeout of its own): it forwards every callback and watches the
request heads with ``httptools``, closing a connection whose head is not
complete within ``--header-timeout`` of its first byte (slowloris), the first
head counted from the accept. Idle keep-alive connections are aiohttp's
``keepalive_timeout`` (``--keepalive-timeout``). Once a request upgrades, the
guard only forwards.

:class:`Overflow` takes a connection accepted beyond ``--max-conns``: it is
answered at once and closed (``503``, or ``200 ok`` for ``/healthz``, so a
saturated relay still says it is alive), and at most ``OVERFLOW_CONNS`` of them
are open at any time, so descriptors never run out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httptools

from swsrs.server import metrics
from swsrs.server.dataplane.writev import format_addr
from swsrs.server.limits import OVERFLOW_CONNS, LogThrottle, SourceLimits, skipped_note
from swsrs.server.proxies import host_of
from swsrs.wire.handshake import refusal

if TYPE_CHECKING:
    from swsrs.server.dataplane.plane import DataPlane

log = logging.getLogger("swsrs.relay")

OVERFLOW_WAIT = 1.0  # seconds a connection over the cap has to send its first line
_HEALTHZ = (b"GET /healthz ", b"GET /healthz?", b"HEAD /healthz ")
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
_FULL = refusal(503, "the relay is at its connection limit; retry later", {"Retry-After": "1"})

LOGS = LogThrottle()  # the front door's refusals: one line per source and kind per interval


def note(kind: str, remote: str, what: str) -> None:
    """Count a refusal of kind ``kind`` in the metrics; log it, once per source per interval."""
    metrics.limit_hit(kind)
    skipped = LOGS.allow(host_of(remote), kind)
    if skipped is not None:
        log.info("%s remote=%s%s", what, remote, skipped_note(skipped))


def full(plane: DataPlane) -> bool:
    """Whether ``--max-conns`` connections are open (this process's and its workers')."""
    if not plane.max_conns:
        return False
    return plane.conns + (plane.busy() if plane.busy else 0) >= plane.max_conns


def client(
    transport: asyncio.BaseTransport, headers: Mapping[str, str], limits: SourceLimits | None
) -> tuple[str, str]:
    """``(remote, source)`` of a request: the peer's ``host:port`` and address, or, from a
    ``--trusted-proxies`` hop, the client the proxy names (both its address)."""
    remote = format_addr(transport.get_extra_info("peername"))
    source = host_of(remote)
    if limits is not None and limits.proxies:
        forwarded = limits.proxies.client(source, headers)
        if forwarded != source:
            return forwarded, forwarded
    return remote, source


def head_timed_out(transport: asyncio.Transport, timeout: float) -> None:
    """A request head that did not arrive in time: close the connection."""
    remote = format_addr(transport.get_extra_info("peername"))
    note("header_timeout", remote, f"closed: no complete request head within {timeout:g}s")
    transport.abort()


class HttpGuard(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a timer on each request head."""

    __slots__ = ("_deadline", "_handler", "_parser", "_plane", "_timer", "_transport")

    def __init__(self, plane: DataPlane, handler: Any, deadline: float | None) -> None:
        self._plane = plane
        self._handler = handler  # aiohttp's RequestHandler
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._deadline = deadline  # of the head under way when the listener handed it over
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._timer is None and self._transport is not None:
            loop = asyncio.get_running_loop()
            timeout = self._plane.header_timeout
            at, self._deadline = self._deadline or loop.time() + timeout, None
            self._timer = loop.call_at(at, head_timed_out, self._transport, timeout)

    def on_headers_complete(self) -> None:
        self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- asyncio callbacks, forwarded ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is not None:
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._stop_watching()  # a tunnel from here on (or aiohttp refuses it)
            except httptools.HttpParserError:
                self._stop_watching()  # aiohttp answers 400 and closes
        self._handler.data_received(data)

    def _stop_watching(self) -> None:
        self._parser = None
        self._disarm()

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        self._plane.conns -= 1
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class Overflow(asyncio.Protocol):
    """A connection beyond ``--max-conns``: answered at once from its first bytes, closed."""

    __slots__ = ("_plane", "_timer", "_transport")

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def take(self, transport: asyncio.Transport) -> None:
        transport.set_protocol(self)
        self.connection_made(transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        plane = self._plane
        remote = format_addr(transport.get_extra_info("peername"))
        note("max_conns", remote, f"refused: at --max-conns ({plane.max_conns} open)")
        if plane.overflow >= OVERFLOW_CONNS:
            transport.abort()
            return
        plane.overflow += 1
        self._timer = asyncio.get_running_loop().call_later(OVERFLOW_WAIT, transport.abort)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_OK if data.startswith(_HEALTHZ) else _FULL)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._plane.overflow -= 1

"""What every connection of one listening socket shares: the store, the rendezvous, the
policies and limits, and the counters of open connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from swsrs.server.dataplane.admit import Seat
from swsrs.server.dataplane.rendezvous import Rendezvous
from swsrs.server.dataplane.throttle import peer_factory
from swsrs.server.limits import SourceLimits
from swsrs.server.origins import OriginPolicy
from swsrs.server.stores.base import SessionStore

if TYPE_CHECKING:
    from swsrs.server.dataplane.listener import RelayProtocol

HEAD_TIMEOUT = 10.0  # default --header-timeout: a request head must be complete by then


class DataPlane:
    """What every connection of one listening socket shares."""

    def __init__(
        self,
        store: SessionStore | None,
        rendezvous: Rendezvous,
        http: Callable[[], asyncio.BaseProtocol] | None,
        handoff: Callable[[asyncio.Transport, Seat], None] | None = None,
        origins: OriginPolicy | None = None,
        *,
        limits: SourceLimits | None = None,
        max_conns: int = 0,
        busy: Callable[[], int] | None = None,
        bandwidth: float = 0.0,
    ) -> None:
        # A worker process gets admitted connections only: no store, no aiohttp.
        self.store = store
        self.rendezvous = rendezvous
        self.http = http  # aiohttp's protocol factory (AppRunner.server)
        # With --workers, admitted connections go to the process that owns the session.
        self.handoff = handoff
        self.origins = origins or OriginPolicy()  # --allowed-origins; default same-origin only
        self.handshaking: set[RelayProtocol] = set()
        # On a store other nodes share: where they reach this node (see splice.py).
        self.advertise: str | None = None
        # Per-address attach limits; --max-conns counts ``conns`` plus ``busy()`` (workers').
        self.limits = limits
        self.header_timeout = limits.config.header_timeout if limits else HEAD_TIMEOUT
        self.max_conns = max_conns
        self.busy = busy
        self.conns = 0  # connections this process has accepted and not yet closed
        self.overflow = 0  # connections over max_conns being answered (guard.Overflow)
        self.new_peer = peer_factory(bandwidth)  # --session-bandwidth: a paced Peer

    def abort_handshakes(self) -> None:
        for p in list(self.handshaking):
            if p.transport is not None:
                p.transport.abort()

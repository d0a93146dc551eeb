"""Keepalive and idle tunnels: one timer per process looks at every attached peer.

- A peer the relay has heard nothing from for ``--ping-interval`` gets a
  ping; one still silent ``--ping-timeout`` after that is cut (its
  counterpart is released), so a dead NAT mapping or a vanished laptop does
  not hold a slot for ever, and a proxy between peer and relay (nginx's
  ``proxy_read_timeout``, a load balancer's idle timeout) sees traffic on an
  idle tunnel.
- With ``--idle-timeout``, a tunnel that carried no data for that long is
  ended (1001, the reason says so), both peers told.

The hot path pays one attribute store per read (``Peer.heard``); clocks are
read here, once per round. A peer whose reading the relay paused on purpose
(backpressure) is not held to it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from swsrs.durations import format_duration
from swsrs.wire.frames import CLOSE_GOING_AWAY

if TYPE_CHECKING:
    from swsrs.server.dataplane.pump import Peer
    from swsrs.server.dataplane.rendezvous import Rendezvous

IDLE_REASON = "tunnel idle for {} (the relay's --idle-timeout)"


class Liveness:
    def __init__(
        self, rendezvous: Rendezvous, *, ping_interval: float, ping_timeout: float, idle: float
    ) -> None:
        self.rendezvous = rendezvous
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.idle = idle  # 0: off
        self._last_heard: dict[int, float] = {}  # id(peer) -> when it was last heard
        self._pinged: dict[int, float] = {}  # id(peer) -> when the unanswered ping went out
        self._timer: asyncio.TimerHandle | None = None

    @property
    def tick(self) -> float:
        return max(0.05, min(self.ping_interval, self.ping_timeout, self.idle or 1e9) / 2)

    def start(self) -> None:
        if self.ping_interval > 0 or self.idle > 0:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._round)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _round(self) -> None:
        now = time.monotonic()
        wall = time.time()
        seen: set[int] = set()
        for live in list(self.rendezvous.sessions.values()):
            peers = [p for p in live.peers.values() if p is not None and p.ready]
            if self.idle and len(peers) == 2 and wall - live.last_activity >= self.idle:
                live.close_peers(CLOSE_GOING_AWAY, IDLE_REASON.format(format_duration(self.idle)))
                continue
            if self.ping_interval > 0:
                for peer in peers:
                    seen.add(id(peer))
                    self._check(peer, now)
        for gone in self._last_heard.keys() - seen:
            self._last_heard.pop(gone, None)
            self._pinged.pop(gone, None)
        self._timer = asyncio.get_running_loop().call_later(self.tick, self._round)

    def _check(self, peer: Peer, now: float) -> None:
        key = id(peer)
        if (
            peer.heard
            or peer.read_paused
            or peer.flow.writing_paused
            or key not in self._last_heard
        ):
            peer.heard = False
            self._last_heard[key] = now
            self._pinged.pop(key, None)
            return
        pinged = self._pinged.get(key)
        if pinged is not None:
            if now - pinged >= self.ping_timeout:
                waited = format_duration(round(self.ping_timeout))
                peer.drop(f"no answer to the relay's ping within {waited}")
        elif now - self._last_heard[key] >= self.ping_interval:
            self._pinged[key] = now
            peer.ping()

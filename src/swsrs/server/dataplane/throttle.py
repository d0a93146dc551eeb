"""``--session-bandwidth``: each direction of a session carries at most so many bytes a second.

A token bucket per sending peer (one second's worth at most), debited by the
payload it forwards. When the bucket is empty the sender's socket is no
longer read until it has refilled: backpressure through TCP, as for a slow
reader, never a buffer in the relay. Off by default, and then free:
:func:`peer_class` hands out the plain :class:`~swsrs.server.dataplane.pump.Peer`,
whose hot path has no check for it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swsrs.server import metrics
from swsrs.server.dataplane.pump import FlowControl, Peer

if TYPE_CHECKING:
    from swsrs.server.dataplane.rendezvous import LiveSession
    from swsrs.server.stores.base import Role


class _Gate:
    """A connection's flow control with a second reason to stop reading: the bucket.

    Reading resumes only when neither the pump (backpressure, pending bytes) nor
    the bucket holds it.
    """

    __slots__ = ("flow", "held", "wanted")

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow
        self.held = False  # the bucket is empty
        self.wanted = True  # the pump wants this connection read

    @property
    def writing_paused(self) -> bool:
        return self.flow.writing_paused

    def pause_reading(self) -> None:
        self.wanted = False
        if not self.held:
            self.flow.pause_reading()

    def resume_reading(self) -> None:
        self.wanted = True
        if not self.held:
            self.flow.resume_reading()

    def hold(self) -> None:
        if not self.held:
            self.held = True
            if self.wanted:
                self.flow.pause_reading()

    def release(self) -> None:
        if self.held:
            self.held = False
            if self.wanted:
                self.flow.resume_reading()


class LimitedPeer(Peer):
    """A :class:`Peer` whose forwarded payload is paced by a token bucket."""

    __slots__ = ("_gate", "_rate", "_refill", "_stamp", "_tokens")

    def __init__(
        self, live: LiveSession, role: Role, flow: FlowControl, *args: Any, bandwidth: float,
        **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(live, role, flow, *args, **kw)
        self._gate = _Gate(flow)
        self.flow = self._gate
        self._rate = bandwidth  # bytes per second
        self._tokens = bandwidth  # a full bucket: one second's worth
        self._stamp = asyncio.get_running_loop().time()
        self._refill: asyncio.TimerHandle | None = None

    def _count(self, n: int) -> None:
        super()._count(n)
        if not n:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        tokens = min(self._rate, self._tokens + (now - self._stamp) * self._rate) - n
        self._tokens, self._stamp = tokens, now
        if tokens < 0 and self._refill is None:
            metrics.limit_hit("bandwidth")
            self._gate.hold()
            self._refill = loop.call_later(-tokens / self._rate, self._refilled)

    def _refilled(self) -> None:
        self._refill = None
        if self.state == 0:  # still open
            self._gate.release()


def peer_factory(bandwidth: float) -> Callable[..., Peer]:
    """What makes a new peer: :class:`Peer`, or with a bandwidth limit a :class:`LimitedPeer`."""
    if bandwidth > 0:
        return functools.partial(LimitedPeer, bandwidth=bandwidth)
    return Peer

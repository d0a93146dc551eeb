"""Who is attached to which slot right now, and the pairing of the two.

Pairing is driven by the second attach itself: no polling. Each
:class:`LiveSession` also owns the timers that bound a session's life
(its TTL) and a lone peer's wait (``--peer-wait``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from swsrs.durations import format_duration
from swsrs.server import metrics
from swsrs.server.stores.base import ROLES, LiveState, Role, SessionRecord
from swsrs.wire.frames import CLOSE_GOING_AWAY, CLOSE_NORMAL

if TYPE_CHECKING:
    from swsrs.server.dataplane.pump import Peer

log = logging.getLogger("swsrs.relay")


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Counters(Protocol):
    bytes_in: int
    bytes_out: int


def status_json(
    record: SessionRecord,
    *,
    initiator: bool,
    responder: bool,
    bytes_in: int,
    bytes_out: int,
    last_activity: float,
) -> dict[str, Any]:
    """A session's status as the admin API shows it (SPEC section 4)."""
    return {
        "id": record.id,
        "state": ("pending", "half_open", "open")[initiator + responder],
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(record.expires_at),
        "last_activity": rfc3339(last_activity),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "initiator_connected": initiator,
        "responder_connected": responder,
    }


class Reported(Protocol):
    """A session's live state as reported from elsewhere (a worker, another node)."""

    @property
    def initiator(self) -> bool: ...
    @property
    def responder(self) -> bool: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def last_activity(self) -> float: ...


def status_reported(record: SessionRecord, r: Reported) -> dict[str, Any]:
    """:func:`status_json` from a reported live state (no activity yet: the creation time)."""
    return status_json(
        record,
        initiator=r.initiator,
        responder=r.responder,
        bytes_in=r.bytes_in,
        bytes_out=r.bytes_out,
        last_activity=r.last_activity or record.created_at,
    )


class Attachments(Protocol):
    """Who is attached to which session, as the admin API and the server's lifecycle see it.

    :class:`Rendezvous` is this for one process; with ``--workers`` the front
    process's :class:`~swsrs.server.workers.pool.WorkerPool` is, for all workers.
    """

    def status(self, record: SessionRecord) -> dict[str, Any]: ...

    def end(self, session_id: str, code: int, reason: str) -> Counters | None:
        """Disconnect a session's peers and forget it (DELETE, expiry)."""
        ...

    def close_all(self, code: int, reason: str) -> int:
        """Close every peer; return how many there were."""
        ...

    def connected(self) -> int: ...

    def live_states(self, node: str) -> list[LiveState]:
        """The state of every session this process holds, for the store's once-a-second flush."""
        ...


class LiveSession:
    """The in-process side of one session: its attached peers and its counters."""

    __slots__ = (
        "_expiry",
        "bytes_in",
        "bytes_out",
        "id",
        "last_activity",
        "paired_at",
        "paired_bytes",
        "peers",
        "record",
        "rendezvous",
        "waiting_since",
    )

    def __init__(self, record: SessionRecord, rendezvous: Rendezvous) -> None:
        self.id = record.id
        self.record = record
        self.rendezvous = rendezvous
        self.peers: dict[Role, Peer | None] = {"initiator": None, "responder": None}
        self.bytes_in = 0  # initiator -> responder
        self.bytes_out = 0  # responder -> initiator
        self.last_activity = record.created_at
        self._expiry: asyncio.TimerHandle | None = None
        # The tunnel (both peers attached) for its metrics and log lines, never per frame:
        self.waiting_since = 0.0  # monotonic: a lone peer began waiting
        self.paired_at: float | None = None  # monotonic: the current tunnel opened
        self.paired_bytes = (0, 0)  # bytes_in, bytes_out when it opened

    def reserve(self, role: Role, peer: Peer) -> bool:
        """Take a slot for a connection whose handshake is under way; ``False`` if held."""
        if self.peers[role] is not None:
            return False
        self.peers[role] = peer
        return True

    def activate(self, peer: Peer) -> None:
        """The handshake is done: pair with the counterpart, or wait for it."""
        other = self.peers["responder" if peer.role == "initiator" else "initiator"]
        if self._expiry is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self.record.expires_at - time.time())
            self._expiry = loop.call_later(delay, self.rendezvous.expire, self.id)
        now = time.monotonic()
        if other is not None and other.ready:
            other.pair(peer)
            waited = now - self.waiting_since if self.waiting_since else 0.0
            self.paired_at, self.paired_bytes = now, (self.bytes_in, self.bytes_out)
            metrics.tunnel_opened(waited)
            log.info(
                "session %s open: both peers attached",
                self.id,
                extra={"event": "paired", "session": self.id, "waited": round(waited, 6)},
            )
        else:
            self.waiting_since = now
            wait = self.rendezvous.peer_wait
            peer.start_wait(wait, f"peer did not attach within {format_duration(wait)}")
        if self.rendezvous.on_change is not None:
            self.rendezvous.on_change(self)

    def detach(self, peer: Peer, reason: str | None = None, code: int | None = None) -> None:
        if self.peers[peer.role] is peer:
            self.peers[peer.role] = None
            kind = metrics.close_kind(reason, code) if reason is not None else ""
            if kind:
                metrics.peer_closed(kind)
            # A peer let go because its counterpart left: the counterpart's detach, which
            # comes right after, says why the tunnel ended.
            counterpart_leaving = kind == "peer_left" and any(self.peers.values())
            if self.paired_at is not None and not counterpart_leaving:
                self._tunnel_closed(reason or "closed")
            if self.rendezvous.on_change is not None:
                self.rendezvous.on_change(self)

    def _tunnel_closed(self, reason: str) -> None:
        """The first peer of a tunnel left: one line with why, how long, how many bytes."""
        assert self.paired_at is not None
        duration = time.monotonic() - self.paired_at
        self.paired_at = None
        metrics.tunnel_closed(duration)
        metrics.count_bytes(self)
        b_in, b_out = self.bytes_in - self.paired_bytes[0], self.bytes_out - self.paired_bytes[1]
        log.info(
            "tunnel closed session=%s reason=%r duration=%.3fs bytes_in=%d bytes_out=%d",
            self.id, reason, duration, b_in, b_out,
            extra={"event": "closed", "session": self.id, "reason": reason,
                   "duration": round(duration, 6), "bytes_in": b_in, "bytes_out": b_out},
        )  # fmt: skip

    def close_peers(self, code: int, reason: str) -> None:
        for role in ROLES:
            p = self.peers[role]
            if p is not None:
                p.close(code, reason)

    def cancel_timers(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def live_state(self, node: str) -> LiveState:
        return LiveState(self.id, node, self.peers["initiator"] is not None,
                         self.peers["responder"] is not None, self.bytes_in, self.bytes_out,
                         self.last_activity)  # fmt: skip

    def status(self) -> dict[str, Any]:
        return status_json(
            self.record,
            initiator=self.peers["initiator"] is not None,
            responder=self.peers["responder"] is not None,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            last_activity=self.last_activity,
        )


class Rendezvous:
    """All live sessions of this process."""

    def __init__(
        self,
        *,
        peer_wait: float,
        max_message: int,
        on_expired: Callable[[str], None] | None = None,
        on_change: Callable[[LiveSession], None] | None = None,
    ) -> None:
        self.peer_wait = peer_wait
        self.max_message = max_message
        self.on_expired = on_expired
        self.on_change = on_change  # a peer attached or detached (workers report it)
        self.sessions: dict[str, LiveSession] = {}

    def session(self, record: SessionRecord) -> LiveSession:
        live = self.sessions.get(record.id)
        if live is None:
            live = self.sessions[record.id] = LiveSession(record, self)
        return live

    def status(self, record: SessionRecord) -> dict[str, Any]:
        live = self.sessions.get(record.id)
        return (live or LiveSession(record, self)).status()

    def end(self, session_id: str, code: int, reason: str) -> LiveSession | None:
        """Disconnect a session's peers and forget it (DELETE, expiry)."""
        live = self.sessions.pop(session_id, None)
        if live is not None:
            live.cancel_timers()
            live.close_peers(code, reason)
            metrics.forget(live)
        return live

    def expire(self, session_id: str) -> None:
        """TTL timer fired: close the peers now; the store forgets the session too."""
        live = self.end(session_id, CLOSE_GOING_AWAY, "session expired")
        if live is not None:
            log.info(
                "session %s closed: expired (bytes_in=%d bytes_out=%d)",
                session_id,
                live.bytes_in,
                live.bytes_out,
            )
        if self.on_expired is not None:
            self.on_expired(session_id)

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "relay shutting down") -> int:
        n = 0
        for live in list(self.sessions.values()):
            for p in live.peers.values():
                if p is not None:
                    n += 1
            live.close_peers(code, reason)
        return n

    def connected(self) -> int:
        return sum(p is not None for s in self.sessions.values() for p in s.peers.values())

    def live_states(self, node: str) -> list[LiveState]:
        return [live.live_state(node) for live in self.sessions.values()]


__all__ = ["CLOSE_NORMAL", "Attachments", "Counters", "LiveSession", "Rendezvous", "rfc3339"]

"""``GET /relay/{id}``: who may attach. Every refusal happens before the upgrade.

Order of checks (SPEC section 3): unknown or expired session → 404, no token
→ 401, wrong token → 401, ``Origin`` not allowed → 403, not a WebSocket
upgrade → 400, slot held → 409.
:func:`admit` is the one place these are decided. A connection reaches it
two ways: almost always through :mod:`swsrs.server.dataplane.listener`, which reads a
new connection's request head itself; and, when a client reuses a
keep-alive connection that aiohttp already serves, through
:class:`RelayHandler`, an ordinary aiohttp route. The IdP is never consulted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from swsrs.errors import StoreError
from swsrs.server import metrics
from swsrs.server.dataplane.pump import WRITE_HIGH_WATER, WRITE_LOW_WATER, Peer
from swsrs.server.dataplane.rendezvous import Rendezvous
from swsrs.server.dataplane.throttle import peer_factory
from swsrs.server.limits import LogThrottle, SourceLimits, retry_after, skipped_note
from swsrs.server.origins import OriginPolicy, origin_refusal
from swsrs.server.proxies import host_of
from swsrs.server.stores.base import Role, SessionRecord, SessionStore
from swsrs.wire.handshake import accept_key, check_upgrade
from swsrs.wire.subprotocol import SUBPROTOCOL, parse_offer

log = logging.getLogger("swsrs.relay")

PATH_PREFIX = "/relay/"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    role: Role | None = None  # the slot, once the token named one
    retry_after: float = 0.0  # a 429: when to try again (Retry-After)
    limit: str = ""  # a 429: which limit (metrics.limit_hit)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": retry_after(self.retry_after)} if self.status == 429 else {}


@dataclass(frozen=True, slots=True)
class Seat:
    """An admitted attach: the session, the slot, the client's key, and bytes read past the head."""

    record: SessionRecord
    role: Role
    key: str
    early: bytes = b""
    remote: str = ""
    # What the client announced on Sec-WebSocket-Protocol (None: not swsrs.v1; see
    # wire/subprotocol.py): the relay answers such a peer with its pairing signals.
    features: tuple[str, ...] | None = None


SLOT_TAKEN = "slot {role} of this session is already held by a connection"
TOO_MANY = {
    "token_guessing": "too many attaches with a wrong token or an unknown session from this "
    "address; retry later",
    "attach_rate": "too many attaches from this address; retry later",
}


def token_from(headers: Mapping[str, str], query_token: str | None) -> str:
    """The data-plane token: ``Authorization: Bearer``, else ``?token=``."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return query_token or ""


async def admit(
    store: SessionStore,
    session_id: str,
    headers: Mapping[str, str],
    query_token: str | None,
    origins: OriginPolicy,
    *,
    source: str = "",
    limits: SourceLimits | None = None,
) -> Refusal | tuple[SessionRecord, Role]:
    """Decide an attach up to the slot check (409), which the process holding the session's
    peers makes: the caller must reserve the slot before its next await.

    ``source`` is the client's address for the per-address ``limits``: a source that
    attaches too often, or named too many unknown sessions or wrong tokens, gets 429
    before anything is looked up, whatever its token.
    """
    if limits is not None and (wait := limits.check_attach(source)) is not None:
        return Refusal(429, TOO_MANY[wait[1]], retry_after=wait[0], limit=wait[1])
    if not session_id.isascii() or not session_id.isprintable():
        # No store has such an id; some cannot even be asked (a str with surrogates).
        if limits is not None:
            limits.failed(source)
        return Refusal(404, "session not found or expired")
    try:
        record = await store.get(session_id)
    except StoreError as exc:
        log.warning("attach to %s refused: %s", session_id, exc)
        return Refusal(503, "session store unavailable, try again")
    if record is None or record.expired():
        if limits is not None:
            limits.failed(source)
        return Refusal(404, "session not found or expired")
    token = token_from(headers, query_token)
    if not token:
        if limits is not None:
            limits.failed(source)
        return Refusal(401, "missing token: send Authorization: Bearer <token> or ?token=")
    role = record.role_for(token) if token.isascii() else None
    if role is None:
        if limits is not None:
            limits.failed(source)
        return Refusal(401, "invalid token for this session")
    if (reason := origin_refusal(origins, headers)) is not None:
        return Refusal(403, reason, role)
    problem = check_upgrade(headers)
    if problem is not None:
        return Refusal(400, problem, role)
    return record, role


def log_attach(peer: Peer) -> None:
    metrics.attach_ok()
    log.info(
        "attach session=%s role=%s remote=%s%s",
        peer.live.id,
        peer.role,
        peer.remote,
        "" if peer.features is None else f" protocol={SUBPROTOCOL}",
        extra={"event": "attach", "session": peer.live.id, "role": peer.role,
               "remote": peer.remote, "protocol": SUBPROTOCOL if peer.features else None},
    )  # fmt: skip


_REFUSALS = LogThrottle()


def log_refusal(
    session_id: str, role: str | None, remote: str, status: int, reason: str, limit: str = ""
) -> None:
    """A refused attach, counted in the metrics, and logged at info: who, which slot, why
    (never the token) -- once per client address and status per interval, not per attempt."""
    metrics.attach_refused(status)
    if limit:
        metrics.limit_hit(limit)
    skipped = _REFUSALS.allow(host_of(remote), str(status))
    if skipped is None:
        return
    shown = session_id[:64].encode("ascii", "backslashreplace").decode()
    log.info(
        "refused attach session=%s role=%s remote=%s status=%d reason=%r%s",
        shown,
        role or "?",
        remote,
        status,
        reason,
        skipped_note(skipped),
        extra={"event": "refused", "session": shown, "role": role, "remote": remote,
               "status": status, "reason": reason, "limit": limit or None,
               "skipped": skipped},
    )  # fmt: skip


class RelayHandler:
    """The aiohttp route for ``/relay/{id}``, for upgrades on a reused keep-alive connection.

    aiohttp keeps parsing the connection and feeds its bytes to the
    :class:`Peer` through ``set_parser`` (where its own WebSocket reader
    would sit); the request task lives as long as the peer.
    """

    def __init__(
        self,
        store: SessionStore,
        rendezvous: Rendezvous,
        handoff: Callable[[asyncio.Transport, Seat], None] | None = None,
        *,
        origins: OriginPolicy,
        limits: SourceLimits | None = None,
        bandwidth: float = 0.0,
    ) -> None:
        self.store = store
        self.rendezvous = rendezvous
        self.handoff = handoff  # --workers: the session's worker seats the connection
        self.origins = origins
        self.limits = limits  # per-address limits (429), shared with the listener
        self.new_peer = peer_factory(bandwidth)  # --session-bandwidth: a paced Peer
        self.advertise: str | None = None  # set at start on a shared store (see splice.py)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote or "?"
        if self.limits is not None:
            remote = self.limits.proxies.client(remote, request.headers)
        verdict = await admit(
            self.store,
            request.match_info["id"],
            request.headers,
            request.query.get("token"),
            self.origins,
            source=remote,
            limits=self.limits,
        )
        if isinstance(verdict, Refusal):
            log_refusal(request.match_info["id"], verdict.role, remote, verdict.status,
                        verdict.reason, verdict.limit)  # fmt: skip
            return web.Response(
                status=verdict.status, text=verdict.reason + "\n", headers=verdict.headers()
            )
        record, role = verdict
        features = parse_offer(request.headers.get("Sec-WebSocket-Protocol"))
        if self.advertise is not None:
            try:
                holder = await self.store.claim(record.id, self.advertise)
            except StoreError as exc:
                log.warning("attach to %s refused: %s", record.id, exc)
                metrics.attach_refused(503)
                return web.Response(status=503, text="session store unavailable, try again\n")
            if holder != self.advertise:
                metrics.attach_refused(503)
                # Splicing needs the raw connection, which aiohttp owns here; a new
                # connection is spliced by the listener.
                return web.Response(
                    status=503,
                    text="this session is held by another relay node: "
                    "retry the upgrade on a new connection\n",
                    headers={"Connection": "close", "Retry-After": "0"},
                )
        transport = request.transport
        if transport is None:
            return web.Response(status=400, text="connection already closed\n")
        if self.handoff is not None:
            key = request.headers["Sec-WebSocket-Key"]
            self.handoff(transport, Seat(record, role, key, b"", remote, features))
            return web.Response(status=101)  # never written: the connection has moved
        live = self.rendezvous.session(record)
        protocol = request.protocol
        peer = self.new_peer(
            live,
            role,
            protocol,
            transport,
            request.writer,
            max_message=self.rendezvous.max_message,
            remote=remote,
            features=features,
        )
        if not live.reserve(role, peer):
            reason = SLOT_TAKEN.format(role=role)
            log_refusal(record.id, role, remote, 409, reason)
            return web.Response(status=409, text=reason + "\n")
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Accept": accept_key(request.headers["Sec-WebSocket-Key"]),
        }
        if features is not None:
            headers["Sec-WebSocket-Protocol"] = SUBPROTOCOL
        resp = web.StreamResponse(status=101, headers=headers)
        resp.force_close()
        try:
            await resp.prepare(request)
        except BaseException:
            peer.feed_eof()
            raise
        if peer.state != 0:  # the session ended while we were answering
            transport.close()
            peer.feed_eof()
            return resp
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        protocol.keep_alive(False)
        protocol.set_parser(peer)  # type: ignore[arg-type]
        peer.ready = True
        log_attach(peer)
        live.activate(peer)
        try:
            await peer.done
        finally:
            if not peer.done.done():  # the handler was cancelled (shutdown)
                transport.abort()
                peer.feed_eof()
        return resp

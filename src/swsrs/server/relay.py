"""``GET /relay/{id}``: the data-plane entry. Every refusal happens before the upgrade.

Order of checks (SPEC section 3): unknown or expired session → 404, no token
→ 401, wrong token → 401, ``Origin`` not allowed → 403, slot held → 409,
not a WebSocket upgrade → 400.
Then the 101 is written and the connection's bytes go to a
:class:`~swsrs.server.pump.Peer`. The IdP is never consulted here.
"""

from __future__ import annotations

import logging

from aiohttp import web

from swsrs.server.cors import OriginPolicy, origin_refusal
from swsrs.server.pump import WRITE_HIGH_WATER, WRITE_LOW_WATER, Peer
from swsrs.server.rendezvous import Rendezvous
from swsrs.server.sessions import SessionStore
from swsrs.wire.handshake import accept_key, check_upgrade

log = logging.getLogger("swsrs.relay")


def _token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token", "")


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n")


class RelayHandler:
    """Attaches WebSocket clients to session slots."""

    def __init__(
        self, store: SessionStore, rendezvous: Rendezvous, origins: OriginPolicy | None = None
    ) -> None:
        self.store = store
        self.rendezvous = rendezvous
        self.origins = origins or OriginPolicy()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["id"]
        record = await self.store.get(sid)
        if record is None or record.expired():
            return _refuse(404, "session not found or expired")
        token = _token(request)
        if not token:
            return _refuse(401, "missing token: send Authorization: Bearer <token> or ?token=")
        role = record.role_for(token)
        if role is None:
            return _refuse(401, "invalid token for this session")
        if (refusal := origin_refusal(self.origins, request.headers)) is not None:
            return _refuse(403, refusal)
        problem = check_upgrade(request.headers)
        if problem is not None:
            return _refuse(400, problem)
        live = self.rendezvous.session(record)
        transport = request.transport
        if transport is None:
            return _refuse(400, "connection already closed")
        protocol = request.protocol
        remote = request.remote or "?"
        peer = Peer(
            live,
            role,
            protocol,
            transport,
            request.writer,
            max_message=self.rendezvous.max_message,
            remote=remote,
        )
        # Take the slot before the first await so two racing attaches cannot both win.
        if not live.reserve(role, peer):
            return _refuse(409, f"slot {role} of this session is already held by a connection")

        resp = web.StreamResponse(
            status=101,
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Accept": accept_key(request.headers["Sec-WebSocket-Key"]),
            },
        )
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
        # From here on aiohttp feeds the connection's bytes to the peer, as it
        # would to its own WebSocket reader.
        protocol.set_parser(peer)  # type: ignore[arg-type]
        peer.ready = True
        log.info("attach session=%s role=%s remote=%s", sid, role, remote)
        live.activate(peer)
        try:
            await peer.done
        finally:
            if not peer.done.done():  # the handler was cancelled (shutdown)
                transport.abort()
                peer.feed_eof()
        return resp

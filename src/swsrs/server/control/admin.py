"""The admin API: ``/admin/sessions[/{id}]`` and the discovery document.

Each route names the scope it needs; the :class:`Authorizer` decides.
Tokens leave the relay once, in the create response, and never again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from swsrs.errors import StoreError
from swsrs.server import metrics
from swsrs.server.config import ServerConfig
from swsrs.server.control.quota import SubjectQuota, subject_of
from swsrs.server.dataplane.rendezvous import Attachments, rfc3339, status_reported
from swsrs.server.stores.base import LiveState, SessionRecord, SessionStore, mint
from swsrs.wire.frames import CLOSE_NORMAL

log = logging.getLogger("swsrs.admin")
audit_log = logging.getLogger("swsrs.audit")

SCOPE_CREATE = "swsrs:session:create"
SCOPE_READ = "swsrs:session:read"
SCOPE_DELETE = "swsrs:session:delete"
AUTH_DISABLED_BODY = "auth disabled on this deployment (--no-auth)"
CLAIMS = "swsrs.claims"  # request key: the verified bearer token's claims (set by the Authorizer)
SESSION = "swsrs.session"  # request key: the session a create minted


class Authorizer(Protocol):
    """Checks an admin request; returns a refusal (401/403/503) or ``None`` to let it through."""

    async def authorize(self, request: web.Request, scope: str) -> web.Response | None: ...

    def discovery(self) -> dict[str, object] | web.Response | None:
        """The discovery document, a refusal (503), or ``None`` when auth is off (404)."""
        ...

    async def start(self) -> None:
        """Called by the relay before it listens (fetch what verification needs)."""
        ...

    async def stop(self) -> None:
        """Called by the relay at shutdown."""
        ...


class NoAuth:
    """``--no-auth``: every admin request passes. Development only."""

    async def authorize(self, request: web.Request, scope: str) -> web.Response | None:
        return None

    def discovery(self) -> dict[str, object] | web.Response | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _text(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _plausible(session_id: str) -> bool:
    """Whether a store could hold this id (a str with surrogates cannot even be asked)."""
    return session_id.isascii() and session_id.isprintable()


def _store_guard(handler: Handler) -> Handler:
    """A store that fails answers ``503`` with its one-line reason, never a traceback."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreError as exc:
            log.warning("admin %s %s: %s", request.method, request.path, exc)
            return _text(503, f"session store unavailable: {exc}")

    return guarded


def _field(value: object) -> str | None:
    """A claim as a log field: a short printable string, or ``None``."""
    if value is None or value == "":
        return None
    text = str(value)[:200]
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def _audited(action: str, handler: Handler) -> Handler:
    """One audit line per admin action: who (the token's sub and azp/client_id), which
    session, the outcome (HTTP status). Never the token itself."""

    async def audited(request: web.Request) -> web.StreamResponse:
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            claims = request.get(CLAIMS) or {}
            sub = _field(claims.get("sub"))
            azp = _field(claims.get("azp") or claims.get("client_id"))
            sid = _field(request.get(SESSION) or request.match_info.get("id"))
            metrics.admin_request(action, status)
            audit_log.info(
                "admin %s session=%s sub=%s azp=%s outcome=%d remote=%s",
                action, sid or "-", sub or "-", azp or "-", status, request.remote,
                extra={"event": "audit", "action": action, "session": sid, "sub": sub,
                       "azp": azp, "outcome": status, "remote": request.remote},
            )  # fmt: skip

    return audited


class AdminAPI:
    def __init__(
        self,
        config: ServerConfig,
        store: SessionStore,
        rendezvous: Attachments,
        authorizer: Authorizer,
    ) -> None:
        self.config = config
        self.store = store
        self.rendezvous = rendezvous
        self.auth = authorizer
        self.quota = SubjectQuota(config.limits.max_sessions_per_subject, store)

    def _status(self, record: SessionRecord, remote: LiveState | None) -> dict[str, object]:
        """This node's own state for the sessions it holds; for the others, what the node
        holding them last flushed to a shared store (up to a second old)."""
        local = self.rendezvous.status(record)
        if (
            remote is None
            or remote.node == self.config.node_id
            or local["initiator_connected"]
            or local["responder_connected"]
        ):
            return local
        return status_reported(record, remote)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/admin/sessions", _audited("create", _store_guard(self.create))),
            web.get("/admin/sessions", _audited("list", _store_guard(self.list))),
            web.get("/admin/sessions/{id}", _audited("get", _store_guard(self.get))),
            web.delete("/admin/sessions/{id}", _audited("delete", _store_guard(self.delete))),
            web.get("/.well-known/swsrs-config", self.well_known),
        ]

    async def create(self, request: web.Request) -> web.Response:
        if (refusal := await self.auth.authorize(request, SCOPE_CREATE)) is not None:
            return refusal
        subject = subject_of(request.get(CLAIMS))
        if (refusal := await self.quota.reserve(subject)) is not None:
            return refusal
        minted = mint(self.config.session_ttl)
        rec = minted.record
        request[SESSION] = rec.id
        try:
            await self.store.add(rec)
        except BaseException:
            self.quota.release(subject)
            raise
        self.quota.added(subject, rec.id, rec.expires_at)
        body: dict[str, object] = {
            "id": rec.id,
            "initiator_token": minted.initiator_token,
            "responder_token": minted.responder_token,
        }
        if self.config.public_base_url:
            url = f"{self.config.public_base_url}/relay/{rec.id}"
            body["initiator_url"] = url
            body["responder_url"] = url
        body["created_at"] = rfc3339(rec.created_at)
        body["expires_at"] = rfc3339(rec.expires_at)
        log.info("session %s created (expires %s)", rec.id, body["expires_at"])
        return web.json_response(body, status=201)

    async def list(self, request: web.Request) -> web.Response:
        if (refusal := await self.auth.authorize(request, SCOPE_READ)) is not None:
            return refusal
        records = [r for r in await self.store.all() if not r.expired()]
        remote = await self.store.get_live([r.id for r in records])
        return web.json_response({"sessions": [self._status(r, remote.get(r.id)) for r in records]})

    async def get(self, request: web.Request) -> web.Response:
        if (refusal := await self.auth.authorize(request, SCOPE_READ)) is not None:
            return refusal
        sid = request.match_info["id"]
        rec = await self.store.get(sid) if _plausible(sid) else None
        if rec is None or rec.expired():
            return _text(404, "session not found or expired")
        remote = await self.store.get_live([rec.id])
        return web.json_response(self._status(rec, remote.get(rec.id)))

    async def delete(self, request: web.Request) -> web.Response:
        if (refusal := await self.auth.authorize(request, SCOPE_DELETE)) is not None:
            return refusal
        sid = request.match_info["id"]
        rec = await self.store.get(sid) if _plausible(sid) else None
        if rec is None or rec.expired():
            return _text(404, "session not found or expired")
        await self.store.delete(sid)
        self.quota.forget(sid)
        live = self.rendezvous.end(sid, CLOSE_NORMAL, "session deleted")
        log.info(
            "session %s closed: deleted (bytes_in=%d bytes_out=%d)",
            sid,
            live.bytes_in if live else 0,
            live.bytes_out if live else 0,
        )
        return web.Response(status=204)

    async def well_known(self, request: web.Request) -> web.Response:
        doc = self.auth.discovery()
        if doc is None:
            return _text(404, AUTH_DISABLED_BODY)
        if isinstance(doc, web.Response):
            return doc
        return web.json_response(doc, headers={"Cache-Control": "public, max-age=300"})

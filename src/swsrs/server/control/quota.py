"""Limits of the admin API: the size of a request body, and live sessions per OIDC subject.

``--max-admin-body``: a body larger than the cap is refused with ``413`` before
any handler runs (by its ``Content-Length``, or by reading at most the cap of
a chunked one), and the connection is closed so nothing more is read.

``--max-sessions-per-subject``: the sessions a subject (the token's ``sub``,
else its ``azp``/``client_id``) minted and that are still live, counted by
this relay process (a DELETE or an expiry gives the slot back; a session
deleted on another node is noticed when the cap is reached). At the cap,
``POST /admin/sessions`` answers ``429`` with the reason and ``Retry-After``
(when the subject's next session expires).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from swsrs.server import metrics
from swsrs.server.limits import LogThrottle, skipped_note
from swsrs.server.stores.base import SessionStore

log = logging.getLogger("swsrs.admin")


def body_cap_middleware(limit: int) -> Middleware:
    """``413`` for an ``/admin/`` request whose body exceeds ``limit`` bytes."""

    def too_large() -> web.Response:
        metrics.limit_hit("admin_body")
        resp = web.Response(status=413, text=f"request body larger than {limit} bytes\n")
        resp.force_close()
        return resp

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/admin/") and request.body_exists:
            size = request.content_length
            if size is not None and size > limit:
                return too_large()
            if size is None:  # chunked: read no more than one byte past the cap
                seen = 0
                while seen <= limit:
                    chunk = await request.content.read(limit + 1 - seen)
                    if not chunk:
                        break
                    seen += len(chunk)
                if seen > limit:
                    return too_large()
        return await handler(request)

    return middleware


def subject_of(claims: Mapping[str, object] | None) -> str | None:
    """Whom a token speaks for: ``sub``, else ``azp`` or ``client_id``; ``None`` without one."""
    if not claims:
        return None
    for key in ("sub", "azp", "client_id"):
        value = claims.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class SubjectQuota:
    """Live sessions per subject, at most ``limit`` each (0: no limit)."""

    def __init__(self, limit: int, store: SessionStore) -> None:
        self.limit = limit
        self.store = store
        self._live: dict[str, dict[str, float]] = {}  # subject -> {session id: expires_at}
        self._owner: dict[str, str] = {}  # session id -> subject
        self._pending: dict[str, int] = {}  # creates under way, per subject
        self._logs = LogThrottle()

    def _count(self, subject: str, now: float) -> int:
        live = self._live.get(subject, {})
        for sid in [s for s, exp in live.items() if exp <= now]:
            self._drop(sid)
        return len(self._live.get(subject, {})) + self._pending.get(subject, 0)

    async def reserve(self, subject: str | None) -> web.Response | None:
        """Hold a place for a create by ``subject``, or the ``429`` that refuses it.
        Every reservation ends with :meth:`added` or :meth:`release`."""
        if not self.limit or subject is None:
            return None
        if self._count(subject, time.time()) >= self.limit:
            # Sessions deleted elsewhere (another node, an expiry sweep) free their place.
            for sid in list(self._live.get(subject, {})):
                rec = await self.store.get(sid)
                if rec is None or rec.expired():
                    self._drop(sid)
        now = time.time()
        if self._count(subject, now) >= self.limit:
            metrics.limit_hit("sessions_per_subject")
            soonest = min(self._live.get(subject, {}).values(), default=now + 1)
            skipped = self._logs.allow(subject, "quota")
            if skipped is not None:
                log.info("create refused: subject %r holds %d live sessions (the limit)%s",
                         subject[:100], self.limit, skipped_note(skipped))  # fmt: skip
            return web.Response(
                status=429,
                text=f"this identity already holds {self.limit} live sessions "
                "(--max-sessions-per-subject); delete one or wait until one expires\n",
                headers={"Retry-After": str(max(1, math.ceil(soonest - now)))},
            )
        self._pending[subject] = self._pending.get(subject, 0) + 1
        return None

    def release(self, subject: str | None) -> None:
        if subject is not None and self._pending.get(subject):
            self._pending[subject] -= 1
            if not self._pending[subject]:
                del self._pending[subject]

    def added(self, subject: str | None, session_id: str, expires_at: float) -> None:
        if not self.limit or subject is None:
            return
        self.release(subject)
        self._live.setdefault(subject, {})[session_id] = expires_at
        self._owner[session_id] = subject

    def forget(self, session_id: str) -> None:
        """The session was deleted: its subject may mint another."""
        self._drop(session_id)

    def _drop(self, session_id: str) -> None:
        subject = self._owner.pop(session_id, None)
        if subject is None:
            return
        live = self._live.get(subject)
        if live is not None:
            live.pop(session_id, None)
            if not live:
                del self._live[subject]

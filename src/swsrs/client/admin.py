"""The admin client: create, list, get and delete sessions over the admin API."""

from __future__ import annotations

import inspect
import ssl as _ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from swsrs.client.proxy import client_session
from swsrs.errors import (
    Forbidden,
    HTTPStatusError,
    NotFound,
    RelayUnreachable,
    Unauthorized,
)
from swsrs.urls import to_http_base

TokenProvider = Callable[[], "Awaitable[str | None] | str | None"]
TokenArg = str | TokenProvider | None


def parse_time(text: str) -> datetime:
    """RFC 3339 (``Z`` or offset; fractions up to nanoseconds, as Go writes them)."""
    t = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in t:
        head, _, rest = t.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        t = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(t)


@dataclass(frozen=True, slots=True)
class CreatedSession:
    """The answer to a create: the only time the two tokens are shown."""

    id: str
    initiator_token: str
    responder_token: str
    created_at: datetime
    expires_at: datetime
    initiator_url: str | None = None
    responder_url: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CreatedSession:
        return cls(
            id=d["id"],
            initiator_token=d["initiator_token"],
            responder_token=d["responder_token"],
            created_at=parse_time(d["created_at"]),
            expires_at=parse_time(d["expires_at"]),
            initiator_url=d.get("initiator_url"),
            responder_url=d.get("responder_url"),
        )


@dataclass(frozen=True, slots=True)
class SessionStatus:
    id: str
    state: str
    created_at: datetime
    expires_at: datetime
    last_activity: datetime
    bytes_in: int
    bytes_out: int
    initiator_connected: bool
    responder_connected: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionStatus:
        return cls(
            id=d["id"],
            state=d["state"],
            created_at=parse_time(d["created_at"]),
            expires_at=parse_time(d["expires_at"]),
            last_activity=parse_time(d["last_activity"]),
            bytes_in=int(d["bytes_in"]),
            bytes_out=int(d["bytes_out"]),
            initiator_connected=bool(d["initiator_connected"]),
            responder_connected=bool(d["responder_connected"]),
        )


async def _resolve(token: TokenArg) -> str | None:
    if token is None or isinstance(token, str):
        return token
    value = token()
    if inspect.isawaitable(value):
        value = await value
    return value


async def raise_for_status(resp: aiohttp.ClientResponse) -> None:
    """Turn an error answer into a typed exception carrying the server's one-line reason."""
    if resp.status < 400:
        return
    body = (await resp.text(errors="replace")).strip().splitlines()
    reason = body[0][:300] if body else resp.reason or "error"
    kind = {404: NotFound, 401: Unauthorized, 403: Forbidden}.get(resp.status, HTTPStatusError)
    raise kind(resp.status, f"HTTP {resp.status}: {reason}")


class AdminClient:
    """Talks to ``/admin/sessions``. ``token`` is a bearer string, or a provider
    (plain or async callable) asked before every request so it can refresh. ``proxy``
    is an HTTP proxy URL (``""``: none; ``None``: ``HTTPS_PROXY`` and the like)."""

    def __init__(
        self,
        base_url: str,
        token: TokenArg = None,
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        timeout: float = 30.0,
        proxy: str | None = None,
    ) -> None:
        self.base_url = to_http_base(base_url)
        self._proxy = proxy  # None: from the environment (HTTPS_PROXY, …); "": none
        self._token = token
        self._ssl = ssl if ssl is not None else True
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def _request(self, method: str, path: str) -> aiohttp.ClientResponse:
        if self._http is None:
            self._http = client_session(self._proxy, timeout=self._timeout)
        headers = {}
        token = await _resolve(self._token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.base_url + path
        try:
            resp = await self._http.request(method, url, headers=headers, ssl=self._ssl)
            await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RelayUnreachable(
                f"cannot reach the relay at {self.base_url}: {_why(exc)}"
            ) from None
        await raise_for_status(resp)
        return resp

    async def create(self) -> CreatedSession:
        resp = await self._request("POST", "/admin/sessions")
        return CreatedSession.from_json(await resp.json())

    async def list(self) -> list[SessionStatus]:
        resp = await self._request("GET", "/admin/sessions")
        return [SessionStatus.from_json(d) for d in (await resp.json())["sessions"]]

    async def get(self, session_id: str) -> SessionStatus:
        resp = await self._request("GET", f"/admin/sessions/{session_id}")
        return SessionStatus.from_json(await resp.json())

    async def delete(self, session_id: str) -> None:
        await self._request("DELETE", f"/admin/sessions/{session_id}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__

"""Sessions: minting, tokens, and the interface of the store that keeps them.

A session is a two-slot rendezvous (``initiator``, ``responder``). This
module knows what a session *is*; who is attached right now lives in
:mod:`swsrs.server.dataplane.rendezvous`. The store sits behind :class:`SessionStore`
so that a persistent or shared store can replace the in-memory one without
touching the relay.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["initiator", "responder"]
ROLES: tuple[Role, Role] = ("initiator", "responder")


def new_token() -> str:
    """128 bits from the OS CSPRNG, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def hash_token(token: str) -> bytes:
    """Tokens are kept only as SHA-256 digests; a 128-bit random token needs no salt or KDF."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class SessionRecord:
    """What the store keeps about a session: identity, token digests and lifetime."""

    id: str
    initiator_token_hash: bytes
    responder_token_hash: bytes
    created_at: float
    expires_at: float

    def role_for(self, token: str) -> Role | None:
        """The slot a token opens, compared in constant time; ``None`` if it opens none."""
        digest = hash_token(token)
        # Compare against both digests unconditionally so timing says nothing.
        is_init = hmac.compare_digest(digest, self.initiator_token_hash)
        is_resp = hmac.compare_digest(digest, self.responder_token_hash)
        if is_init:
            return "initiator"
        if is_resp:
            return "responder"
        return None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


@dataclass(frozen=True, slots=True)
class MintedSession:
    """A new session and its two tokens: the only moment the tokens exist in the clear."""

    record: SessionRecord
    initiator_token: str
    responder_token: str


def mint(ttl: float, now: float | None = None) -> MintedSession:
    now = time.time() if now is None else now
    init, resp = new_token(), new_token()
    record = SessionRecord(
        id=new_token(),
        initiator_token_hash=hash_token(init),
        responder_token_hash=hash_token(resp),
        created_at=now,
        expires_at=now + ttl,
    )
    return MintedSession(record, init, resp)


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """A session ended somewhere (any node): every node holding its peers closes them.

    ``reason`` is ``deleted`` (close 1000) or ``expired`` (close 1001);
    ``node`` is the id of the node that ended it.
    """

    sid: str
    reason: Literal["deleted", "expired"]
    node: str = ""
    op: Literal["end"] = "end"


@dataclass(frozen=True, slots=True)
class LiveState:
    """Which slots of a session are held, by which node, and its counters.

    Each node writes the state of the sessions it holds in one batch a
    second (:meth:`SessionStore.put_live`), so an admin call on any node can
    show a session whose peers are attached elsewhere.
    """

    sid: str
    node: str
    initiator: bool
    responder: bool
    bytes_in: int
    bytes_out: int
    last_activity: float


class SessionStore(Protocol):
    """Where session records live. Implementations must be safe to call from the event loop.

    The data plane calls :meth:`get` once per attach and never during
    forwarding; everything else is admin-plane or reaper traffic.
    """

    #: Other relay nodes use this store too: the relay then follows :meth:`events`
    #: and flushes its live state with :meth:`put_live` once a second.
    shared: bool

    async def add(self, record: SessionRecord) -> None: ...

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record, or ``None`` if unknown. May return an expired record; callers check."""
        ...

    async def all(self) -> list[SessionRecord]: ...

    async def delete(self, session_id: str) -> bool:
        """Remove a session; ``True`` if it existed."""
        ...

    async def pop_expired(self, now: float) -> list[SessionRecord]:
        """Remove and return every session whose lifetime has ended."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~swsrs.errors.StoreError` if the store cannot be used right now."""
        ...

    def events(self) -> AsyncIterator[StoreEvent]:
        """Sessions ended by any node sharing this store, for as long as the store is open.

        A store that only this process uses yields nothing: this process
        already ended its own sessions. A shared store reconnects by itself;
        events published while it was unreachable are lost.
        """
        ...

    async def put_live(self, node: str, states: list[LiveState], *, addr: str = "") -> list[str]:
        """Record, in one batch, the live state of the sessions ``node`` holds; with ``addr``
        (where other nodes reach it), also renew its claim on those with a peer attached.

        Returns the sessions whose claim another node holds now (this node lost them)."""
        ...

    async def claim(self, session_id: str, addr: str, *, replacing: str = "") -> str:
        """Become the node that holds ``session_id``'s peers, reachable at ``addr``, unless
        another node already is: return the holder's address (``addr`` if it is this node).

        ``replacing`` names a holder found unreachable, whose claim may be taken.
        A store nobody else shares always answers ``addr``.
        """
        ...

    async def get_live(self, session_ids: list[str]) -> dict[str, LiveState]:
        """The last live state any node recorded for these sessions (absent: none)."""
        ...

    async def close(self) -> None: ...


async def no_events() -> AsyncIterator[StoreEvent]:
    """The :meth:`SessionStore.events` of a store nobody else shares: waits, yields nothing."""
    await asyncio.Event().wait()
    return
    yield  # an async generator

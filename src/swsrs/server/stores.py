"""``--store URL``: which :class:`~swsrs.server.sessions.SessionStore` a URL names."""

from __future__ import annotations

from swsrs.errors import StoreError
from swsrs.server.redis_store import RedisSessionStore
from swsrs.server.sessions import MemorySessionStore, SessionStore
from swsrs.server.sqlite_store import SQLiteSessionStore


async def open_store(url: str, *, node: str = "") -> SessionStore:
    """The store a ``--store`` URL names: ``memory``, ``sqlite://PATH`` or ``redis(s)://…``.

    ``sqlite:///var/lib/swsrs/sessions.db`` is an absolute path and
    ``sqlite://sessions.db`` a relative one. ``node`` names this relay in the
    events a shared store publishes. Raises
    :class:`~swsrs.errors.StoreError` when the store cannot be used.
    """
    if url == "memory":
        return MemorySessionStore()
    if url.startswith("sqlite://"):
        return await SQLiteSessionStore.open(url[len("sqlite://") :])
    if url.startswith(("redis://", "rediss://")):
        return await RedisSessionStore.open(url, node=node)
    raise StoreError(f"unknown session store {url!r}")

"""``--store URL``: which :class:`~swsrs.server.stores.base.SessionStore` a URL names."""

from __future__ import annotations

from swsrs.errors import StoreError
from swsrs.server.stores.base import SessionStore
from swsrs.server.stores.memory import MemorySessionStore
from swsrs.server.stores.redis import RedisSessionStore
from swsrs.server.stores.sqlite import SQLiteSessionStore


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

"""A session store that times every operation for the metrics (``--metrics-addr`` only).

It wraps any :class:`~swsrs.server.stores.base.SessionStore` and records each
call's latency, and its failures, under the backend's name (memory, sqlite,
redis): ``swsrs_store_operation_seconds`` and ``swsrs_store_errors_total``.
Without ``--metrics-addr`` the relay uses the store unwrapped.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from swsrs.server import metrics
from swsrs.server.stores.base import LiveState, SessionRecord, SessionStore, StoreEvent

T = TypeVar("T")


def backend_of(url: str) -> str:
    """The backend's name in a ``--store`` URL."""
    if url.startswith("sqlite://"):
        return "sqlite"
    if url.startswith(("redis://", "rediss://")):
        return "redis"
    return "memory"


class MeteredStore:
    """``store``, each operation timed and its failures counted."""

    def __init__(self, store: SessionStore, backend: str) -> None:
        self.inner = store
        self.backend = backend
        self.shared = store.shared

    async def _timed(self, op: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        failed = True
        try:
            result = await call
            failed = False
            return result
        finally:
            metrics.store_op(self.backend, op, started, failed)

    async def add(self, record: SessionRecord) -> None:
        await self._timed("add", self.inner.add(record))

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self._timed("get", self.inner.get(session_id))

    async def all(self) -> list[SessionRecord]:
        return await self._timed("all", self.inner.all())

    async def delete(self, session_id: str) -> bool:
        return await self._timed("delete", self.inner.delete(session_id))

    async def pop_expired(self, now: float) -> list[SessionRecord]:
        return await self._timed("pop_expired", self.inner.pop_expired(now))

    async def ping(self) -> None:
        await self._timed("ping", self.inner.ping())

    def events(self) -> AsyncIterator[StoreEvent]:
        return self.inner.events()

    async def put_live(self, node: str, states: list[LiveState], *, addr: str = "") -> list[str]:
        return await self._timed("put_live", self.inner.put_live(node, states, addr=addr))

    async def claim(self, session_id: str, addr: str, *, replacing: str = "") -> str:
        return await self._timed("claim", self.inner.claim(session_id, addr, replacing=replacing))

    async def get_live(self, session_ids: list[str]) -> dict[str, LiveState]:
        return await self._timed("get_live", self.inner.get_live(session_ids))

    async def close(self) -> None:
        await self.inner.close()

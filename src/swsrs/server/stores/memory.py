"""The default session store: a dict in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator

from swsrs.server.stores.base import LiveState, SessionRecord, StoreEvent, no_events


class MemorySessionStore:
    """The default store: a dict in this process. Sessions die with the process."""

    shared = False

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}

    async def add(self, record: SessionRecord) -> None:
        self._records[record.id] = record

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def all(self) -> list[SessionRecord]:
        return sorted(self._records.values(), key=lambda r: r.created_at)

    async def delete(self, session_id: str) -> bool:
        return self._records.pop(session_id, None) is not None

    async def pop_expired(self, now: float) -> list[SessionRecord]:
        gone = [r for r in self._records.values() if r.expires_at <= now]
        for r in gone:
            del self._records[r.id]
        return gone

    async def ping(self) -> None:
        return None

    def events(self) -> AsyncIterator[StoreEvent]:
        return no_events()

    async def put_live(self, node: str, states: list[LiveState], *, addr: str = "") -> list[str]:
        return []  # this process's own state is the only state

    async def claim(self, session_id: str, addr: str, *, replacing: str = "") -> str:
        return addr

    async def get_live(self, session_ids: list[str]) -> dict[str, LiveState]:
        return {}

    async def close(self) -> None:
        self._records.clear()

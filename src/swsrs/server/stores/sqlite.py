"""``--store sqlite:///path``: sessions in an embedded SQLite file, surviving restarts.

Minted sessions keep their ids, token digests (never the tokens) and
expiry across a restart of the relay, so the tokens an operator handed out
still open their slots. One relay process uses the file; several relay
nodes share a Redis store instead.

SQLite calls block, so they run on one thread of their own, in order; the
data plane asks the store once per attach and never while forwarding.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from swsrs.errors import StoreError
from swsrs.server.stores.base import LiveState, SessionRecord, StoreEvent, no_events

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id                   TEXT PRIMARY KEY,
    initiator_token_hash BLOB NOT NULL,
    responder_token_hash BLOB NOT NULL,
    created_at           REAL NOT NULL,
    expires_at           REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
"""
_COLUMNS = "id, initiator_token_hash, responder_token_hash, created_at, expires_at"
BUSY_TIMEOUT_MS = 2000


def _record(row: tuple[str, bytes, bytes, float, float]) -> SessionRecord:
    return SessionRecord(row[0], bytes(row[1]), bytes(row[2]), float(row[3]), float(row[4]))


class SQLiteSessionStore:
    """A :class:`~swsrs.server.stores.base.SessionStore` in one SQLite file."""

    shared = False  # one relay process uses the file

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="swsrs-sqlite")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteSessionStore:
        """Open (creating if needed) and check the file; :class:`StoreError` says what is wrong."""
        store = cls(path)
        try:
            await store._run(store._open)
        except BaseException:
            await store.close()
            raise
        return store

    def _open(self) -> None:
        where = f"sqlite://{self.path}"
        try:
            if self.path.is_dir():
                raise StoreError(f"{where} is a directory, not a database file")
            if not self.path.parent.is_dir():
                raise StoreError(f"{where}: directory {self.path.parent} does not exist")
        except OSError as exc:
            raise StoreError(f"cannot use {where}: {exc.strerror or exc}") from None
        try:
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {where}: {exc}") from None
        self._db = db
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{where} was written by a newer swsrs (schema {version} > {SCHEMA_VERSION})"
                )
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StoreError(f"{where} is corrupt (PRAGMA quick_check failed)")
            # A write at start finds a read-only file or a lock held elsewhere now,
            # not at the first attach.
            db.execute("BEGIN IMMEDIATE")
            db.executescript(_SCHEMA)  # commits
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot use {where}: {_explain(exc)}") from None

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"session store sqlite://{self.path}: {_explain(exc)}") from None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("session store is closed")
        return self._db

    async def add(self, record: SessionRecord) -> None:
        r = record
        values = (r.id, r.initiator_token_hash, r.responder_token_hash, r.created_at, r.expires_at)
        await self._run(
            lambda: self._conn().execute(
                f"INSERT INTO sessions ({_COLUMNS}) VALUES (?,?,?,?,?)", values
            )
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        def get() -> SessionRecord | None:
            row = (
                self._conn()
                .execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
                .fetchone()
            )
            return _record(row) if row else None

        return await self._run(get)

    async def all(self) -> list[SessionRecord]:
        def all_() -> list[SessionRecord]:
            rows = self._conn().execute(f"SELECT {_COLUMNS} FROM sessions ORDER BY created_at")
            return [_record(r) for r in rows]

        return await self._run(all_)

    async def delete(self, session_id: str) -> bool:
        def delete() -> bool:
            cur = self._conn().execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return cur.rowcount > 0

        return await self._run(delete)

    async def pop_expired(self, now: float) -> list[SessionRecord]:
        def pop() -> list[SessionRecord]:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM sessions WHERE expires_at <= ?", (now,)
                ).fetchall()
                db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [_record(r) for r in rows]

        return await self._run(pop)

    async def ping(self) -> None:
        await self._run(lambda: self._conn().execute("SELECT 1").fetchone())

    def events(self) -> AsyncIterator[StoreEvent]:
        return no_events()  # one process uses the file

    async def put_live(self, node: str, states: list[LiveState], *, addr: str = "") -> list[str]:
        return []

    async def claim(self, session_id: str, addr: str, *, replacing: str = "") -> str:
        return addr  # one node per file: it holds every session

    async def get_live(self, session_ids: list[str]) -> dict[str, LiveState]:
        return {}

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, close)
        finally:
            self._thread.shutdown(wait=False)


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text:
        return f"{text} (is another process holding the file?)"
    if "readonly" in text or "read-only" in text:
        return f"{text} (check the file's and its directory's permissions)"
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        return f"{text} (the file is corrupt or not a SQLite database)"
    return text


__all__ = ["SQLiteSessionStore"]

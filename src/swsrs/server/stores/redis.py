"""``--store redis://host:port/db``: sessions in Redis, shared by several relay nodes.

Keys (``PREFIX`` is ``swsrs:`` unless the URL says ``?prefix=…``):

- ``PREFIX session:{id}`` — a hash: ``i``/``r`` the SHA-256 digests of the two
  tokens (never the tokens), ``c``/``e`` created and expiry times. Redis
  itself deletes it at the session's expiry (``PEXPIREAT``).
- ``PREFIX expiry`` — a sorted set of ids scored by expiry time: the index the
  reapers of every node pop, atomically, in a Lua script, so exactly one node
  announces each expiry.
- ``PREFIX live:{id}`` — a hash: the node holding the session's peers, which
  slots are held, the byte counters and the last activity, written by that
  node once a second and expiring 10 s later, so a dead node's entries vanish.
- ``PREFIX events`` — a pub/sub channel: ``{"op": "end", "sid", "reason",
  "node"}`` when a session is deleted or expires, so the node holding its
  peers closes them.

Every Redis failure becomes a :class:`~swsrs.errors.StoreError` with a
one-line reason; connect and read timeouts (2 s) bound every call, and the
client reconnects by itself on the next call once Redis is back.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import TimeoutError as RedisTimeout

from swsrs.errors import StoreError
from swsrs.server.stores.base import LiveState, SessionRecord, StoreEvent

log = logging.getLogger("swsrs.store")

DEFAULT_PREFIX = "swsrs:"
TIMEOUT = 2.0  # seconds: connect and every read; nothing waits longer on Redis
LIVE_TTL = 10  # seconds a node's live state (and its claim on a session) outlives its last flush
RESUBSCRIBE_DELAY = 1.0
POP_BATCH = 1000  # expired ids one reaper pass takes at most

# KEYS: owner; ARGV: addr, ttl ms, replacing. Who holds a session's peers: the
# first node a peer reaches claims it; a holder found unreachable may be replaced.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or (ARGV[3] ~= '' and cur == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return ARGV[1]
end
return cur
"""

# KEYS: session, expiry, live, events; ARGV: id, now, node.
_DELETE = """
local existed = redis.call('DEL', KEYS[1])
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if existed == 1 or score then
  local reason = 'deleted'
  if score and tonumber(score) <= tonumber(ARGV[2]) then reason = 'expired' end
  redis.call('PUBLISH', KEYS[4],
    cjson.encode({op = 'end', sid = ARGV[1], reason = reason, node = ARGV[3]}))
end
return existed
"""

# KEYS: expiry, events; ARGV: now, prefix, node, batch.
_POP_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[2] .. 'session:' .. id
  local f = redis.call('HMGET', key, 'i', 'r', 'c')
  local score = redis.call('ZSCORE', KEYS[1], id)
  redis.call('DEL', key, ARGV[2] .. 'live:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('PUBLISH', KEYS[2],
    cjson.encode({op = 'end', sid = id, reason = 'expired', node = ARGV[3]}))
  out[#out + 1] = {id, score, f[1] or '', f[2] or '', f[3] or ''}
end
return out
"""


def split_url(url: str) -> tuple[str, str, str]:
    """``redis(s)://…[?prefix=P]`` → (the URL for redis-py, the key prefix, a printable place).

    Raises :class:`ValueError` with a one-line reason for a URL that cannot work.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in {redact(url)!r} (want 1-65535)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"bad port in {redact(url)!r} (want 1-65535)")
    db = parts.path.lstrip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"bad database number {db!r} in {redact(url)!r} (want /0, /1, …)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for k, v in query:
        if k == "prefix":
            prefix = v
        else:
            rest.append((k, v))
    if not prefix:
        raise ValueError("?prefix= must not be empty")
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    place = f"{parts.scheme}://{parts.hostname or 'localhost'}:{port}/{db}"
    return client_url, prefix, place


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*\) of pipeline caused error: (.*)$", re.S)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    # redis-py prefixes an error inside a pipeline with the command, arguments included
    # (token digests among them): keep only the server's message.
    # Older releases show the error's args as a tuple, newer ones its message.
    if _PIPELINE_NOTE.match(text) is not None:
        text = text.rpartition(" of pipeline caused error: ")[2]
        if text.startswith("("):
            with contextlib.suppress(ValueError, SyntaxError):
                args = ast.literal_eval(text)
                text = str(args[0]) if isinstance(args, tuple) and args else text
        if text.startswith("Command # "):
            text = type(exc).__name__
    return " ".join(text.split()).rstrip(".") or type(exc).__name__


def _explain(exc: BaseException) -> str:
    text = str(exc)
    if "NOAUTH" in text or "HELLO must be called with the client already authenticated" in text:
        return (
            "authentication failed: the server wants a password "
            "(redis://[user]:password@host:port/db)"
        )
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return f"authentication failed ({_one_line(exc)}); check the URL's user and password"
    if isinstance(exc, ReadOnlyError):
        return f"{_one_line(exc)} (the URL points at a replica; use the primary)"
    if isinstance(exc, (RedisTimeout, TimeoutError)):
        return f"timed out after {TIMEOUT:g}s ({_one_line(exc)})"
    if isinstance(exc, ConnectionError):
        return f"unreachable ({_one_line(exc)})"
    return _one_line(exc)


def _float(v: bytes | str | None, default: float = 0.0) -> float:
    return float(v) if v not in (None, b"", "") else default


class RedisSessionStore:
    """A :class:`~swsrs.server.stores.base.SessionStore` in Redis, shared by every node using it."""

    shared = True

    def __init__(self, url: str, *, node: str = "") -> None:
        client_url, self.prefix, self.place = split_url(url)
        self.node = node
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            client_url,
            socket_connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            # One immediate retry: the first call after a Redis restart meets a dead
            # pooled connection, and the retry reconnects.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[ConnectionError, RedisTimeout],
        )
        self._delete = self._redis.register_script(_DELETE)
        self._claim = self._redis.register_script(_CLAIM)
        self._pop_expired = self._redis.register_script(_POP_EXPIRED)
        self._closed = asyncio.Event()

    @classmethod
    async def open(cls, url: str, *, node: str = "") -> RedisSessionStore:
        """Connect and ping. An unreachable Redis is only a warning: the relay starts and
        answers ``503`` until Redis is back. Anything else (a wrong password, a bad
        database number) is a :class:`StoreError`, so the relay exits at start."""
        try:
            store = cls(url, node=node)
        except ValueError as exc:
            raise StoreError(f"--store: {exc}") from None
        try:
            await store._redis.ping()
        except (AuthenticationError, AuthorizationError) as exc:
            await store.close()
            raise StoreError(f"session store {store.place}: {_explain(exc)}") from None
        except (ConnectionError, RedisTimeout, OSError, TimeoutError) as exc:
            log.warning(
                "session store %s %s; starting anyway: admin calls answer 503 until it is back",
                store.place, _explain(exc),
            )  # fmt: skip
        except RedisError as exc:
            await store.close()
            raise StoreError(f"session store {store.place}: {_explain(exc)}") from None
        return store

    def _key(self, kind: str, session_id: str = "") -> str:
        return f"{self.prefix}{kind}{session_id}"

    @contextlib.contextmanager
    def _fault(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(f"{self.place}: {_explain(exc)}") from None

    async def add(self, record: SessionRecord) -> None:
        r = record
        key = self._key("session:", r.id)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hset(key, mapping={"i": r.initiator_token_hash, "r": r.responder_token_hash,
                                  "c": repr(r.created_at), "e": repr(r.expires_at)})  # fmt: skip
            tx.pexpireat(key, math.ceil(r.expires_at * 1000))
            tx.zadd(self._key("expiry"), {r.id: r.expires_at})
            with self._fault():
                await tx.execute()

    async def get(self, session_id: str) -> SessionRecord | None:
        with self._fault():
            h = await self._redis.hgetall(self._key("session:", session_id))
        return self._record(session_id, h)  # type: ignore[arg-type]

    @staticmethod
    def _record(session_id: str, h: dict[bytes, bytes]) -> SessionRecord | None:
        if not h or b"i" not in h or b"r" not in h:
            return None
        return SessionRecord(session_id, h[b"i"], h[b"r"], _float(h.get(b"c")),
                             _float(h.get(b"e")))  # fmt: skip

    async def all(self) -> list[SessionRecord]:
        with self._fault():
            raw: list[bytes] = await self._redis.zrange(self._key("expiry"), 0, -1)  # type: ignore[assignment]
            ids = [i.decode() for i in raw]
            async with self._redis.pipeline(transaction=False) as p:
                for sid in ids:
                    p.hgetall(self._key("session:", sid))
                hashes = await p.execute() if ids else []
        records = [self._record(sid, h) for sid, h in zip(ids, hashes, strict=True)]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    async def delete(self, session_id: str) -> bool:
        keys = [self._key("session:", session_id), self._key("expiry"),
                self._key("live:", session_id), self._key("events")]  # fmt: skip
        with self._fault():
            existed = await self._delete(keys=keys, args=[session_id, time.time(), self.node])
        return bool(existed)

    async def pop_expired(self, now: float) -> list[SessionRecord]:
        """Remove and return expired sessions. Redis has usually deleted a session's hash
        already (at its expiry), so a record is often only what the index knows: the id
        and the expiry, with empty digests and ``created_at`` equal to ``expires_at``."""
        keys = [self._key("expiry"), self._key("events")]
        with self._fault():
            rows = await self._pop_expired(keys=keys, args=[now, self.prefix, self.node,
                                                            POP_BATCH])  # fmt: skip
        out = []
        for sid, score, i, r, c in rows:
            expires = _float(score)
            out.append(SessionRecord(sid.decode(), i, r, _float(c, expires), expires))
        return out

    async def ping(self) -> None:
        with self._fault():
            await self._redis.ping()

    async def events(self) -> AsyncIterator[StoreEvent]:
        """Follow the events channel; resubscribe, once a second, after Redis goes away."""
        channel = self._key("events")
        failing = False
        while not self._closed.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                if failing:
                    log.info("session store %s: events channel back", self.place)
                    failing = False
                while not self._closed.is_set():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    event = self._event(msg["data"])
                    if event is not None:
                        yield event
            except (RedisError, OSError, TimeoutError) as exc:
                if not failing:
                    log.warning("session store %s: events channel lost: %s; resubscribing",
                                self.place, _explain(exc))  # fmt: skip
                    failing = True
            finally:
                with contextlib.suppress(Exception):
                    aclose: Any = pubsub.aclose  # typed only in some redis-py releases
                    await aclose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), RESUBSCRIBE_DELAY)

    @staticmethod
    def _event(data: bytes) -> StoreEvent | None:
        try:
            obj = json.loads(data)
            if obj.get("op") == "end" and obj.get("reason") in ("deleted", "expired"):
                return StoreEvent(str(obj["sid"]), obj["reason"], str(obj.get("node", "")))
        except (ValueError, KeyError, AttributeError):
            pass
        log.warning("session store: ignoring a malformed event (%d bytes)", len(data))
        return None

    async def claim(self, session_id: str, addr: str, *, replacing: str = "") -> str:
        with self._fault():
            owner = await self._claim(
                keys=[self._key("owner:", session_id)], args=[addr, LIVE_TTL * 1000, replacing]
            )
        return owner.decode() if isinstance(owner, bytes) else str(owner)

    async def put_live(self, node: str, states: list[LiveState], *, addr: str = "") -> list[str]:
        if not states:
            return []
        claimed: list[str] = []  # sessions whose claim this batch renews, in order
        async with self._redis.pipeline(transaction=False) as p:
            for s in states:
                if addr and (s.initiator or s.responder):
                    claimed.append(s.sid)
                    await self._claim(
                        keys=[self._key("owner:", s.sid)],
                        args=[addr, LIVE_TTL * 1000, ""],
                        client=p,
                    )
                key = self._key("live:", s.sid)
                p.hset(key, mapping={"node": node, "i": int(s.initiator), "r": int(s.responder),
                                     "in": s.bytes_in, "out": s.bytes_out,
                                     "last": repr(s.last_activity)})  # fmt: skip
                p.expire(key, LIVE_TTL)
            with self._fault():
                results = await p.execute()
        # Each claim's answer comes first among its session's three results.
        answers = [r for r in results if isinstance(r, bytes | str)]
        return [
            sid
            for sid, owner in zip(claimed, answers, strict=False)
            if (owner.decode() if isinstance(owner, bytes) else owner) != addr
        ]

    async def get_live(self, session_ids: list[str]) -> dict[str, LiveState]:
        if not session_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as p:
            for sid in session_ids:
                p.hgetall(self._key("live:", sid))
            with self._fault():
                hashes = await p.execute()
        out = {}
        for sid, h in zip(session_ids, hashes, strict=True):
            if h:
                out[sid] = LiveState(
                    sid, h.get(b"node", b"").decode(), h.get(b"i") == b"1", h.get(b"r") == b"1",
                    int(h.get(b"in", 0)), int(h.get(b"out", 0)), _float(h.get(b"last")),
                )  # fmt: skip
        return out

    async def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(Exception):
            await self._redis.aclose()


__all__ = ["DEFAULT_PREFIX", "RedisSessionStore", "redact", "split_url"]

"""Wiring of the relay: one aiohttp server for both planes, the reaper, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Callable

from aiohttp import web

from swsrs.server import assets, malloc, tls
from swsrs.server.admin import AdminAPI, Authorizer, NoAuth
from swsrs.server.config import ServerConfig
from swsrs.server.cors import OriginPolicy, cors_middleware
from swsrs.server.listener import DataPlane, RelayProtocol
from swsrs.server.relay import RelayHandler
from swsrs.server.rendezvous import Attachments, Rendezvous
from swsrs.server.sessions import MemorySessionStore, SessionStore, open_store
from swsrs.server.workers import WorkerPool
from swsrs.wire.frames import CLOSE_GOING_AWAY

log = logging.getLogger("swsrs")

LISTEN_BACKLOG = 1024
SHUTDOWN_GRACE = 3.0  # seconds peers get to answer our 1001 close on shutdown

NO_AUTH_WARNING = """
************************************************************************
*  WARNING: --no-auth is set. The admin API is OPEN: anyone who can    *
*  reach this port can create, list and delete sessions.               *
*  Use it for development only. The data plane still needs tokens.     *
************************************************************************"""


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


class Relay:
    """A relay server: build it, :meth:`start` it, :meth:`stop` it."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        store: SessionStore | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.config = config
        self.store: SessionStore = store or MemorySessionStore()
        self.rendezvous = Rendezvous(
            peer_wait=config.peer_wait,
            max_message=config.max_frame_size,
            on_expired=self._forget,
        )
        # With --workers, peers live in worker processes and the pool speaks for them.
        self.pool: WorkerPool | None = None
        self.attachments: Attachments = self.rendezvous
        if config.workers > 1:
            self.pool = WorkerPool(
                config.workers,
                peer_wait=config.peer_wait,
                max_message=config.max_frame_size,
                log_level=config.log_level,
            )
            self.attachments = self.pool
        handoff = self.pool.handoff if self.pool else None
        self.authorizer: Authorizer = authorizer or NoAuth()
        self.origins = origins = OriginPolicy(config.allowed_origins)
        self.app = web.Application(middlewares=[cors_middleware(origins)])
        relay = RelayHandler(self.store, self.rendezvous, handoff, origins=origins)
        self.app.add_routes(
            [
                web.get("/healthz", _healthz),
                web.get("/relay/{id}", relay),
                *AdminAPI(config, self.store, self.attachments, self.authorizer).routes(),
                *assets.routes(demo=config.demo),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._plane: DataPlane | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self.addresses: list[str] = []

    def _forget(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.store.delete(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval)
            try:
                for rec in await self.store.pop_expired(time.time()):
                    live = self.attachments.end(rec.id, CLOSE_GOING_AWAY, "session expired")
                    log.info(
                        "session %s closed: expired (bytes_in=%d bytes_out=%d)",
                        rec.id,
                        live.bytes_in if live else 0,
                        live.bytes_out if live else 0,
                    )
            except Exception:  # the reaper must outlive a store hiccup
                log.exception("reaper failed; retrying next interval")

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert or not self.config.tls_key:
            return None
        return tls.server_context(self.config.tls_cert, self.config.tls_key)

    async def start(self) -> None:
        await self.authorizer.start()  # never raises for an IdP outage: admin calls get 503
        # No access log: a query string may carry a data-plane token.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        http = self._runner.server
        assert http is not None  # set by setup()
        if self.pool is not None:
            self.pool.start()
        handoff = self.pool.handoff if self.pool else None
        plane = self._plane = DataPlane(self.store, self.rendezvous, http, handoff, self.origins)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RelayProtocol(plane),
            host=self.config.host,
            port=self.config.port,
            ssl=self._ssl_context(),
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
        )
        scheme = self.config.scheme
        for s in self._server.sockets:
            host, port = s.getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            self.addresses.append(f"{scheme}://{host}:{port}")
        self._reaper = loop.create_task(self._reap())

    async def stop(self) -> None:
        """Stop accepting, close every peer with 1001, give them a moment, then exit."""
        if self._server is not None:
            self._server.close()  # stop listening; open connections stay
        if self._plane is not None:
            self._plane.abort_handshakes()
        if self._reaper is not None:
            self._reaper.cancel()
        n = self.attachments.close_all(CLOSE_GOING_AWAY, "relay shutting down")
        if n:
            log.info("closing %d peer connection(s) with 1001", n)
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while self.attachments.connected() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        if self.pool is not None:
            await self.pool.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.authorizer.stop()
        await self.store.close()


async def serve(config: ServerConfig, *, on_ready: Callable[[Relay], None] | None = None) -> int:
    """Run a relay until SIGINT/SIGTERM; return the exit status."""
    if config.no_auth:
        log.warning(NO_AUTH_WARNING)
    malloc.tune()
    authorizer: Authorizer | None = None
    if not config.no_auth:
        from swsrs.server.oidc import OIDCAuthorizer

        assert config.oidc_issuer is not None
        authorizer = OIDCAuthorizer(
            config.oidc_issuer, audience=config.oidc_audience, client_id=config.oidc_client_id
        )
    store = await open_store(config.store)
    relay = Relay(config, store=store, authorizer=authorizer)
    try:
        await relay.start()
    except BaseException:
        await store.close()
        raise
    for addr in relay.addresses:
        log.info("listening on %s", addr)
    if config.demo and relay.addresses:
        log.info("demo chat page: %s%s", relay.addresses[0], assets.CHAT_PATH)
    if on_ready is not None:
        on_ready(relay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await relay.stop()
    log.info("stopped")
    return 0

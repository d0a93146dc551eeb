"""Wiring of the relay: one aiohttp server for both planes, the reaper, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from swsrs.errors import StoreError
from swsrs.server import malloc, metrics, sdnotify, tls
from swsrs.server.config import ServerConfig
from swsrs.server.control import assets
from swsrs.server.control.admin import AdminAPI, Authorizer, NoAuth
from swsrs.server.control.cors import cors_middleware
from swsrs.server.control.exporter import Exporter
from swsrs.server.control.quota import body_cap_middleware
from swsrs.server.dataplane.admit import RelayHandler
from swsrs.server.dataplane.listener import RelayProtocol
from swsrs.server.dataplane.liveness import Liveness
from swsrs.server.dataplane.plane import DataPlane
from swsrs.server.dataplane.rendezvous import Attachments, Rendezvous
from swsrs.server.limits import ACCEPT_BATCH, SourceLimits, conns_for, fd_limit
from swsrs.server.noise import accept_errors, install_parser_filter
from swsrs.server.origins import OriginPolicy
from swsrs.server.stores.base import SessionStore, StoreEvent
from swsrs.server.stores.memory import MemorySessionStore
from swsrs.server.stores.metered import MeteredStore, backend_of
from swsrs.server.stores.open import open_store
from swsrs.server.workers.pool import WorkerPool
from swsrs.wire.frames import CLOSE_GOING_AWAY, CLOSE_NORMAL

log = logging.getLogger("swsrs")

LISTEN_BACKLOG = 1024
FLUSH_INTERVAL = 1.0  # seconds between batched writes of live state to the store
READY_TIMEOUT = 5.0  # /readyz never waits longer on the store

NO_AUTH_WARNING = """
************************************************************************
*  WARNING: --no-auth is set. The admin API is OPEN: anyone who can    *
*  reach this port can create, list and delete sessions.               *
*  Use it for development only. The data plane still needs tokens.     *
************************************************************************"""


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _readyz(store: SessionStore) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Readiness: ``200 ready`` while the session store answers, else ``503`` with why."""

    async def readyz(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await store.ping()
        except StoreError as exc:
            return web.Response(status=503, text=f"session store unavailable: {exc}\n")
        except TimeoutError:
            return web.Response(status=503, text="session store unavailable: ping timed out\n")
        return web.Response(text="ready")

    return readyz


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
                log_format=config.log_format,
            )
            self.attachments = self.pool
        handoff = self.pool.handoff if self.pool else None
        limits = config.limits
        keepalive = {"ping_interval": config.ping_interval, "ping_timeout": config.ping_timeout,
                     "idle": config.idle_timeout}  # fmt: skip
        self.liveness = Liveness(self.rendezvous, **keepalive)
        if self.pool is not None:
            self.pool.worker_config["bandwidth"] = limits.session_bandwidth
            self.pool.worker_config["keepalive"] = keepalive
            self.pool.worker_config["drain_timeout"] = config.drain_timeout
        self.limits = SourceLimits(limits)  # per client address (limits.py)
        self.authorizer: Authorizer = authorizer or NoAuth()
        self.origins = origins = OriginPolicy(config.allowed_origins)
        self.app = web.Application(
            middlewares=[cors_middleware(origins), body_cap_middleware(limits.max_admin_body)],
            client_max_size=limits.max_admin_body,
        )
        relay = self._relay_route = RelayHandler(self.store, self.rendezvous, handoff,
                                                 origins=origins, limits=self.limits,
                                                 bandwidth=limits.session_bandwidth)  # fmt: skip
        self.app.add_routes(
            [
                web.get("/healthz", _healthz),
                web.get("/readyz", _readyz(self.store)),
                web.get("/relay/{id}", relay),
                *AdminAPI(config, self.store, self.attachments, self.authorizer).routes(),
                *assets.routes(demo=config.demo),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._plane: DataPlane | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self.addresses: list[str] = []
        self.advertise = ""  # host:port for the other nodes (shared store only)
        self.exporter: Exporter | None = None  # --metrics-addr
        self._metered: asyncio.Task[None] | None = None

    def _forget(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.store.delete(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.config.reap_interval)
            try:
                expired = await self.store.pop_expired(time.time())
            except StoreError as exc:
                if not failing:  # one line per outage
                    log.warning("reaper: %s; retrying every interval", exc)
                failing = True
                continue
            except Exception:  # the reaper must outlive a store hiccup
                log.exception("reaper failed; retrying next interval")
                continue
            failing = False
            try:
                for rec in expired:
                    live = self.attachments.end(rec.id, CLOSE_GOING_AWAY, "session expired")
                    log.info(
                        "session %s closed: expired (bytes_in=%d bytes_out=%d)",
                        rec.id,
                        live.bytes_in if live else 0,
                        live.bytes_out if live else 0,
                    )
            except Exception:
                log.exception("reaper failed; retrying next interval")

    async def _follow_events(self) -> None:
        """Close this node's peers of sessions another node deleted or saw expire."""
        while True:
            try:
                async for event in self.store.events():
                    self._on_event(event)
                return
            except Exception:  # a store bug must not end the subscription for good
                log.exception("session store events failed; resubscribing")
                await asyncio.sleep(1.0)

    def _on_event(self, event: StoreEvent) -> None:
        if event.node == self.config.node_id:
            return  # this node ended it already
        if event.reason == "deleted":
            live = self.attachments.end(event.sid, CLOSE_NORMAL, "session deleted")
        else:
            live = self.attachments.end(event.sid, CLOSE_GOING_AWAY, "session expired")
        if live is not None:
            log.info(
                "session %s closed: %s on node %s (bytes_in=%d bytes_out=%d)",
                event.sid, event.reason, event.node, live.bytes_in, live.bytes_out,
            )  # fmt: skip

    async def _flush_live(self) -> None:
        """Once a second, one batched write of this node's live state (never per message)."""
        failing = False
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            states = self.attachments.live_states(self.config.node_id)
            try:
                lost = await self.store.put_live(self.config.node_id, states, addr=self.advertise)
            except StoreError as exc:
                if not failing:  # one line per outage, not one a second
                    log.warning("live state not flushed: %s; retrying every second", exc)
                failing = True
                continue
            except Exception:
                log.exception("live state flush failed; retrying next second")
                continue
            if failing:
                log.info("live state flushed again: the session store is back")
                failing = False
            for sid in lost:
                # Another node took the session over (this one was cut off from the store
                # or from it): the peers here could never meet the peers there.
                log.warning("session %s is held by another node now; closing its peers here", sid)
                self.attachments.end(sid, CLOSE_GOING_AWAY, "session moved to another relay node")

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert or not self.config.tls_key:
            return None
        return tls.server_context(self.config.tls_cert, self.config.tls_key)

    async def start(self) -> None:
        await self.authorizer.start()  # never raises for an IdP outage: admin calls get 503
        limits = self.config.limits
        max_conns = self._max_conns()  # raises the descriptor limit: before workers start
        loop = asyncio.get_running_loop()
        accept_errors(loop)  # descriptors exhausted: one line per interval, no traceback
        install_parser_filter()  # malformed requests: one line per source, no request bytes
        # No access log: a query string may carry a data-plane token.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     keepalive_timeout=limits.keepalive_timeout)  # fmt: skip
        await self._runner.setup()
        http = self._runner.server
        assert http is not None  # set by setup()
        if self.pool is not None:
            self.pool.start()
        handoff = self.pool.handoff if self.pool else None
        plane = self._plane = DataPlane(
            self.store, self.rendezvous, http, handoff, self.origins, limits=self.limits,
            max_conns=max_conns, busy=self.pool.connected if self.pool else None,
            bandwidth=limits.session_bandwidth,
        )  # fmt: skip
        self._server = await loop.create_server(
            lambda: RelayProtocol(plane),
            host=self.config.host,
            port=self.config.port,
            ssl=self._ssl_context(),
            reuse_address=True,
            backlog=ACCEPT_BATCH,
        )
        for s in self._server.sockets:
            # asyncio accepts as many connections in one go as the listen backlog, before
            # any protocol sees one: a burst could take every descriptor past --max-conns.
            # A small batch for asyncio, the full queue for the kernel.
            with socket.fromfd(s.fileno(), s.family, s.type) as listening:
                listening.listen(LISTEN_BACKLOG)
        scheme = self.config.scheme
        for s in self._server.sockets:
            host, port = s.getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            self.addresses.append(f"{scheme}://{host}:{port}")
        self._reaper = loop.create_task(self._reap())
        if self.pool is None:  # with --workers, each worker watches its own peers
            self.liveness.start()
        if self.config.metrics_addr is not None and metrics.enabled():
            mhost, mport = self.config.metrics_addr
            self.exporter = Exporter(mhost, mport, self.store, self.attachments,
                                     self.config.node_id)  # fmt: skip
            await self.exporter.start()
            self._metered = loop.create_task(metrics.flush_bytes(self.rendezvous.sessions.values))
        if self.store.shared:  # one node alone needs none of this
            plane.advertise = self.advertise = self.config.advertise_addr or _advertise(
                self._server.sockets[0].getsockname()
            )
            self._relay_route.advertise = self.advertise
            log.info("other nodes reach this one at %s", self.advertise)
            self._background = [
                loop.create_task(self._follow_events()),
                loop.create_task(self._flush_live()),
            ]

    def _max_conns(self) -> int:
        """--max-conns, or what the descriptor limit allows (never more: the relay must keep
        descriptors for its store, its workers and /healthz)."""
        fds = fd_limit()
        room = conns_for(fds)
        wanted = self.config.limits.max_conns
        if wanted > room:
            log.warning("--max-conns %d exceeds what %d file descriptors allow; using %d",
                        wanted, fds, room)  # fmt: skip
        n = min(wanted, room) if wanted else room
        log.info("connection limit %d (file descriptors: %d)", n, fds)
        return n

    async def stop(self) -> None:
        """Stop accepting, close every peer with 1001, give them a moment, then exit."""
        if self._server is not None:
            self._server.close()  # stop listening; open connections stay
        if self._plane is not None:
            self._plane.abort_handshakes()
        if self._reaper is not None:
            self._reaper.cancel()
        self.liveness.stop()
        if self._metered is not None:
            self._metered.cancel()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        n = self.attachments.close_all(CLOSE_GOING_AWAY, "relay shutting down")
        if n:
            log.info("closing %d peer connection(s) with 1001", n)
            deadline = time.monotonic() + self.config.drain_timeout
            while self.attachments.connected() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        if self.pool is not None:
            await self.pool.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.authorizer.stop()
        if self.exporter is not None:
            await self.exporter.stop()
        await self.store.close()


def _printable(store: str) -> str:
    if store.startswith(("redis://", "rediss://")):
        from swsrs.server.stores.redis import redact

        return redact(store)
    return store


async def serve(config: ServerConfig, *, on_ready: Callable[[Relay], None] | None = None) -> int:
    """Run a relay until SIGINT/SIGTERM; return the exit status."""
    if config.no_auth:
        log.warning(NO_AUTH_WARNING)
    malloc.tune()
    authorizer: Authorizer | None = None
    if not config.no_auth:
        from swsrs.server.control.oidc import OIDCAuthorizer

        assert config.oidc_issuer is not None
        authorizer = OIDCAuthorizer(
            config.oidc_issuer, audience=config.oidc_audience, client_id=config.oidc_client_id
        )
    log.info("node id %s, session store %s", config.node_id, _printable(config.store))
    if config.metrics_addr is not None:
        metrics.enable(metrics.new_run_dir())  # before any worker starts: they inherit it
    store = await open_store(config.store, node=config.node_id)
    if metrics.enabled():
        store = MeteredStore(store, backend_of(config.store))
    relay = Relay(config, store=store, authorizer=authorizer)
    try:
        await relay.start()
    except BaseException:
        await store.close()
        metrics.cleanup()
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
    sdnotify.notify("READY=1\nSTATUS=listening on " + ", ".join(relay.addresses))
    await stop.wait()
    log.info("shutting down")
    sdnotify.notify("STOPPING=1")
    await relay.stop()
    metrics.cleanup()
    log.info("stopped")
    return 0


def _advertise(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """``host:port`` of the listening socket; the hostname when it listens on every interface."""
    host, port = sockname[0], sockname[1]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

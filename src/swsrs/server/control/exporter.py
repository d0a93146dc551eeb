"""``--metrics-addr``: the Prometheus endpoint, on a listener of its own.

It never shares the relay's port, so metrics are not public by accident.
``GET /metrics`` answers every process's metrics (see
:mod:`swsrs.server.metrics`) plus ``swsrs_sessions{state}``, counted when
scraped from the session store and the live state this node holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from swsrs.errors import StoreError
from swsrs.server import metrics
from swsrs.server.dataplane.rendezvous import Attachments, status_reported
from swsrs.server.stores.base import SessionStore

log = logging.getLogger("swsrs.metrics")

STATES = ("pending", "half_open", "open")


class _Sessions:
    """``swsrs_sessions{state}`` as counted just before a scrape."""

    def __init__(self, counts: dict[str, int] | None) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if self.counts is None:  # the store failed: no number rather than a wrong one
            return
        g = GaugeMetricFamily(
            "swsrs_sessions",
            "Unexpired sessions by state: pending (no peer), half_open (one), open (both). "
            "With a shared store every node counts every session: aggregate with max.",
            labels=["state"],
        )
        for state in STATES:
            g.add_metric([state], self.counts.get(state, 0))
        yield g


class Exporter:
    def __init__(self, host: str | None, port: int, store: SessionStore, live: Attachments,
                 node: str) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.store = store
        self.live = live
        self.node = node
        self.address = ""
        self._runner: web.AppRunner | None = None
        self._failing = False

    async def sessions(self) -> dict[str, int] | None:
        try:
            records = [r for r in await self.store.all() if not r.expired()]
            remote = await self.store.get_live([r.id for r in records]) if self.store.shared else {}
        except StoreError as exc:
            if not self._failing:
                log.warning("metrics: sessions not counted: %s", exc)
            self._failing = True
            return None
        self._failing = False
        counts = dict.fromkeys(STATES, 0)
        for r in records:
            st = self.live.status(r)
            other = remote.get(r.id)
            if (
                other is not None
                and other.node != self.node
                and not (st["initiator_connected"] or st["responder_connected"])
            ):
                st = status_reported(r, other)
            counts[str(st["state"])] += 1
        return counts

    async def handle(self, request: web.Request) -> web.Response:
        body, ctype = metrics.exposition([_Sessions(await self.sessions())])
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/metrics", self.handle)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            host, port = sockets[0].getsockname()[:2]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("metrics on http://%s/metrics", self.address or f"{self.host}:{self.port}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

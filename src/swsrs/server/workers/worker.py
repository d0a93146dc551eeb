"""A worker process of ``swsrs serve --workers N``: the data plane of the sessions it owns.

The front process (:mod:`swsrs.server.workers.pool`) admits each ``/relay/``
connection and sends the socket here, to the worker that owns its session,
so that both peers of a session always meet in one process. The worker
seats it (``409`` if the slot is held), forwards the bytes and reports the
session's state: on every attach and detach, and its counters once a second.

Started by the front as ``python -m swsrs.server.workers.worker FD CONFIG_JSON``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from typing import Any

from swsrs.server import malloc, metrics
from swsrs.server.dataplane.admit import Seat
from swsrs.server.dataplane.listener import RelayProtocol
from swsrs.server.dataplane.liveness import Liveness
from swsrs.server.dataplane.plane import DataPlane
from swsrs.server.dataplane.rendezvous import LiveSession, Rendezvous
from swsrs.server.logs import setup_logging
from swsrs.server.stores.base import Role, SessionRecord
from swsrs.server.workers.channel import Channel
from swsrs.wire.frames import CLOSE_GOING_AWAY

log = logging.getLogger("swsrs.worker")

STATS_INTERVAL = 1.0  # counters reach the front this often (and on every attach/detach)
SHUTDOWN_GRACE = 3.0


def state_message(live: LiveSession) -> dict[str, Any]:
    return {
        "op": "state",
        "sid": live.id,
        "i": live.peers["initiator"] is not None,
        "r": live.peers["responder"] is not None,
        "in": live.bytes_in,
        "out": live.bytes_out,
        "last": live.last_activity,
    }


class Worker:
    def __init__(self, fd: int, config: dict[str, Any]) -> None:
        self.fd = fd
        self.config = config
        self.stopping = asyncio.Event()
        self.shutdown_reason = "relay shutting down"
        self.sent: dict[str, tuple[int, int]] = {}  # counters last reported, per session

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.rendezvous = Rendezvous(
            peer_wait=float(self.config["peer_wait"]),
            max_message=int(self.config["max_message"]),
            on_change=self._changed,
        )
        bandwidth = float(self.config.get("bandwidth", 0.0))
        self.plane = DataPlane(None, self.rendezvous, None, bandwidth=bandwidth)
        self.channel = Channel(socket.socket(fileno=self.fd), self._message, self.stopping.set)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        keepalive = self.config.get("keepalive") or {}
        liveness = Liveness(self.rendezvous, ping_interval=float(keepalive.get("ping_interval", 0)),
                            ping_timeout=float(keepalive.get("ping_timeout", 20)),
                            idle=float(keepalive.get("idle", 0)))  # fmt: skip
        liveness.start()
        stats = loop.create_task(self._report_counters())
        metered = loop.create_task(metrics.flush_bytes(self.rendezvous.sessions.values))
        await self.stopping.wait()
        stats.cancel()
        metered.cancel()
        liveness.stop()
        n = self.rendezvous.close_all(CLOSE_GOING_AWAY, self.shutdown_reason)
        deadline = time.monotonic() + float(self.config.get("drain_timeout", SHUTDOWN_GRACE))
        while n and self.rendezvous.connected() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.channel.close()
        return 0

    def _changed(self, live: LiveSession) -> None:
        self.sent[live.id] = (live.bytes_in, live.bytes_out)
        self.channel.send(state_message(live))

    async def _report_counters(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            for sid in [s for s in self.sent if s not in self.rendezvous.sessions]:
                del self.sent[sid]
            for live in self.rendezvous.sessions.values():
                now = (live.bytes_in, live.bytes_out)
                if self.sent.get(live.id) != now:
                    self.sent[live.id] = now
                    self.channel.send(state_message(live))

    def _message(self, obj: dict[str, Any], data: bytes, fd: int | None) -> None:
        op = obj.get("op")
        if op == "seat" and fd is not None:
            self._seat(obj, data, fd)
        elif op == "end":
            self.rendezvous.end(str(obj["sid"]), int(obj["code"]), str(obj["reason"]))
        elif op == "close_all":
            self.rendezvous.close_all(int(obj["code"]), str(obj["reason"]))
        elif op == "stop":
            self.shutdown_reason = str(obj.get("reason", self.shutdown_reason))
            self.stopping.set()
        else:
            log.error("unexpected control message %r", op)
            if fd is not None:
                socket.socket(fileno=fd).close()

    def _seat(self, obj: dict[str, Any], early: bytes, fd: int) -> None:
        record = SessionRecord(
            id=str(obj["sid"]),
            initiator_token_hash=b"",  # tokens were checked by the front
            responder_token_hash=b"",
            created_at=float(obj["created"]),
            expires_at=float(obj["expires"]),
        )
        role: Role = "initiator" if obj["role"] == "initiator" else "responder"
        features = obj.get("features")
        seat = Seat(record, role, str(obj["key"]), early, str(obj.get("remote", "")),
                    None if features is None else tuple(map(str, features)))  # fmt: skip
        sock = socket.socket(fileno=fd)
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.connect_accepted_socket(lambda: RelayProtocol(self.plane, seat), sock)
        )
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not adopt a connection: %s", task.exception())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, config = int(args[0]), json.loads(args[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front coordinates a Ctrl-C
    setup_logging(str(config.get("log_level", "info")), f"worker {config.get('index', '?')}",
                  fmt=str(config.get("log_format", "text")))  # fmt: skip
    metrics.enable_from_env()
    malloc.tune()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(Worker(fd, config).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

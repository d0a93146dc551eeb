"""``swsrs serve --workers N``: one front process and N data-plane workers.

The front owns the listening socket, the session store, the admin API and
every request head. A ``/relay/{id}`` upgrade is admitted there (404, 401,
400) and its socket, with any bytes read past the head, is sent over a Unix
socket to the worker that owns the session — ``crc32(id) mod N`` — so both
peers of a session always meet in one process and the bytes never cross
processes. Workers report each session's state on every attach and detach
and its counters once a second; the front keeps that mirror so any admin
call sees every session. ``DELETE``, expiry and shutdown go the other way.

Why this design: it needs no shared store (the store stays in one
process), moves only descriptors, and keeps the hot path identical to the
single-process relay. Its cost: TLS cannot be handed over mid-connection,
so ``--workers`` above 1 needs TLS terminated in front of the relay; and
counters in the admin API may lag by up to a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any

from swsrs.server import metrics
from swsrs.server.dataplane.admit import Seat
from swsrs.server.dataplane.rendezvous import status_reported
from swsrs.server.stores.base import LiveState, SessionRecord
from swsrs.server.workers.channel import Channel, pair

log = logging.getLogger("swsrs.workers")

STOP_TIMEOUT = 10.0
RESTART_PAUSE = 1.0  # seconds before restarting a worker that died right after starting
LATE_REPORTS = 10.0  # how long reports about an ended session are ignored


@dataclass(slots=True)
class Mirror:
    """What the front knows of a session's live state (reported by its worker)."""

    initiator: bool = False
    responder: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    last_activity: float = 0.0


class WorkerHandle:
    """One worker process and the channel to it."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.started = 0.0

    def spawn(self) -> None:
        front, child = pair()
        config = {**self.pool.worker_config, "index": self.index}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swsrs.server.workers.worker",
                str(child.fileno()),
                json.dumps(config),
            ],
            pass_fds=(child.fileno(),),
        )
        child.close()
        self.started = time.monotonic()
        self.channel = Channel(front, self._message, self._gone)
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)

    def send(self, obj: dict[str, Any], data: bytes = b"", fd: int | None = None) -> None:
        if self.channel is None:
            if fd is not None:
                os.close(fd)
            return
        self.channel.send(obj, data, fd)

    def _message(self, obj: dict[str, Any], data: bytes, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)
        if obj.get("op") == "state":
            sid = str(obj["sid"])
            if sid in self.pool.ended:
                return  # a late report about a session the front already forgot
            m = self.pool.mirror.setdefault(sid, Mirror())
            m.initiator, m.responder = bool(obj["i"]), bool(obj["r"])
            m.bytes_in, m.bytes_out = int(obj["in"]), int(obj["out"])
            m.last_activity = float(obj["last"])

    def _gone(self) -> None:
        self.channel = None
        proc = self.proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(0.5)  # it closed its channel: it is exiting
            except subprocess.TimeoutExpired:  # alive but deaf: replace it
                proc.kill()
                code = proc.wait()
            metrics.process_dead(proc.pid)  # its live gauges go; its counters stay summed
        pool = self.pool
        for sid in [s for s in pool.mirror if pool.owner(s) is self]:
            m = pool.mirror[sid]
            m.initiator = m.responder = False
        if pool.stopping:
            return
        # A worker that dies at once is restarted after a pause, not in a tight loop.
        delay = RESTART_PAUSE if time.monotonic() - self.started < RESTART_PAUSE * 5 else 0.0
        log.error("worker %d exited (status %s); its peers were disconnected; restarting",
                  self.index, code)  # fmt: skip
        asyncio.get_running_loop().call_later(delay, self._respawn)

    def _respawn(self) -> None:
        if not self.pool.stopping:
            self.spawn()


class WorkerPool:
    """The front's view of its workers (the front's
    :class:`~swsrs.server.dataplane.rendezvous.Attachments`)."""

    def __init__(self, n: int, *, peer_wait: float, max_message: int, log_level: str,
                 log_format: str = "text") -> None:  # fmt: skip
        self.worker_config = {
            "peer_wait": peer_wait,
            "max_message": max_message,
            "log_level": log_level,
            "log_format": log_format,
        }
        self.workers = [WorkerHandle(self, i) for i in range(n)]
        self.mirror: dict[str, Mirror] = {}
        self.ended: set[str] = set()  # forgotten sessions whose workers may still report
        self.stopping = False

    def start(self) -> None:
        for w in self.workers:
            w.spawn()

    def owner(self, session_id: str) -> WorkerHandle:
        return self.workers[zlib.crc32(session_id.encode()) % len(self.workers)]

    def handoff(self, transport: asyncio.Transport, seat: Seat) -> None:
        """Send an admitted connection to its session's worker; this process lets go of it."""
        sock = transport.get_extra_info("socket")
        r = seat.record
        self.ended.discard(r.id)
        self.owner(r.id).send(
            {
                "op": "seat",
                "sid": r.id,
                "created": r.created_at,
                "expires": r.expires_at,
                "role": seat.role,
                "key": seat.key,
                "remote": seat.remote,
                "features": seat.features,
            },
            seat.early,
            os.dup(sock.fileno()),
        )
        # The socket lives on in the worker: closing our descriptor sends nothing.
        transport.abort()

    # -- Attachments -------------------------------------------------------------

    def status(self, record: SessionRecord) -> dict[str, Any]:
        return status_reported(record, self.mirror.get(record.id) or Mirror())

    def end(self, session_id: str, code: int, reason: str) -> Mirror | None:
        self.owner(session_id).send(
            {"op": "end", "sid": session_id, "code": code, "reason": reason}
        )
        # Reports the worker sent before the "end" reached it arrive within moments.
        self.ended.add(session_id)
        asyncio.get_running_loop().call_later(LATE_REPORTS, self.ended.discard, session_id)
        return self.mirror.pop(session_id, None)

    def close_all(self, code: int, reason: str) -> int:
        n = self.connected()
        for w in self.workers:
            w.send({"op": "close_all", "code": code, "reason": reason})
        return n

    def connected(self) -> int:
        return sum(m.initiator + m.responder for m in self.mirror.values())

    def live_states(self, node: str) -> list[LiveState]:
        return [LiveState(sid, node, m.initiator, m.responder, m.bytes_in, m.bytes_out,
                          m.last_activity) for sid, m in self.mirror.items()]  # fmt: skip

    async def stop(self) -> None:
        """Ask every worker to close its peers and exit; wait for them."""
        self.stopping = True
        for w in self.workers:
            w.send({"op": "stop", "reason": "relay shutting down"})
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self.workers:
            if w.proc is None:
                continue
            while w.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if w.proc.poll() is None:
                log.warning("worker %d did not stop in time; killing it", w.index)
                w.proc.kill()
                w.proc.wait()

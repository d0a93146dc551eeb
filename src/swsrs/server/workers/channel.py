"""Messages between the relay's front process and its workers (``--workers``).

One ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair per worker: the kernel keeps
message boundaries and carries file descriptors (``SCM_RIGHTS``), which is
how an accepted client socket moves to the worker that owns its session.
A message is a JSON object, optionally followed by raw bytes, and at most
one descriptor. Nothing here is on the bytes' hot path: only attaches,
state changes and counters once a second cross it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("swsrs.workers")

MAX_MESSAGE = 64 * 1024  # a JSON header plus at most a request head's worth of early bytes
_SEP = b"\0"

Handler = Callable[[dict[str, Any], bytes, int | None], None]


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair for one worker: (front end, worker end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Channel:
    """Both directions of one socket, on the running event loop.

    ``on_message(obj, data, fd)`` gets every message (``fd`` is a descriptor the
    receiver now owns, or ``None``); ``on_close()`` runs once the other side is gone.
    """

    def __init__(
        self, sock: socket.socket, on_message: Handler, on_close: Callable[[], None]
    ) -> None:
        self.sock = sock
        sock.setblocking(False)
        self._on_message = on_message
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[tuple[bytes, int | None]] = collections.deque()
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, obj: dict[str, Any], data: bytes = b"", fd: int | None = None) -> None:
        """Queue a message. ``fd`` is closed here once it is on its way."""
        msg = json.dumps(obj, separators=(",", ":")).encode() + _SEP + data
        if len(msg) > MAX_MESSAGE:
            raise ValueError(f"control message of {len(msg)} bytes is too large")
        if self.closed:
            if fd is not None:
                os.close(fd)
            return
        self._queue.append((msg, fd))
        if len(self._queue) == 1:
            self._flush()

    def _flush(self) -> None:
        while self._queue:
            msg, fd = self._queue[0]
            try:
                if fd is None:
                    self.sock.send(msg)
                else:
                    socket.send_fds(self.sock, [msg], [fd])
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self.sock.fileno(), self._writable)
                return
            except OSError:
                self.close()
                return
            self._queue.popleft()
            if fd is not None:
                os.close(fd)

    def _writable(self) -> None:
        self._loop.remove_writer(self.sock.fileno())
        self._flush()

    def _readable(self) -> None:
        while not self.closed:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg:
                for fd in fds:
                    os.close(fd)
                self.close()
                return
            head, _, data = msg.partition(_SEP)
            try:
                obj = json.loads(head)
            except ValueError:
                log.error("dropping a malformed control message")
                for fd in fds:
                    os.close(fd)
                continue
            self._on_message(obj, data, fds[0] if fds else None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
        for _, fd in self._queue:
            if fd is not None:
                os.close(fd)
        self._queue.clear()
        self.sock.close()
        self._on_close()

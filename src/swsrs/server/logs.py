"""Log lines of the relay: one line per event, UTC timestamps, on stderr."""

from __future__ import annotations

import logging
import sys
import time


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def setup_logging(level: str, tag: str = "") -> None:
    """Send every log line to stderr; ``tag`` (e.g. ``worker 1``) marks a worker's lines."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"[{tag}] " if tag else ""
    handler.setFormatter(_UTCFormatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(logging.WARNING)

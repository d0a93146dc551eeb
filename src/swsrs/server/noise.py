"""What clients can make the relay log, bounded: one line per source per interval.

aiohttp logs every request it cannot parse at ERROR with a traceback, and the
exception's text quotes the offending bytes (an ``Authorization`` header
among them). :class:`ParserErrors` turns each such record into one line that
names the source and the kind of error, and never a byte of the request.
:func:`accept_errors` does the same for asyncio's "socket.accept() out of
system resource" (descriptors exhausted), which it would log with a
traceback every time it retries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from swsrs.server import metrics
from swsrs.server.limits import LogThrottle, skipped_note

log = logging.getLogger("swsrs.relay")

_ACCEPT_MESSAGES = (
    "socket.accept() out of system resource",
    "Error on transport creation for incoming connection",
)


class ParserErrors(logging.Filter):
    """On the ``aiohttp.server`` logger: a malformed request is one info line per source
    and interval, without traceback or request bytes; other records pass unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = LogThrottle()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        metrics.limit_hit("malformed_request")
        source = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        skipped = self.throttle.allow(source, type(exc).__name__)
        if skipped is None:
            return False
        record.name = "swsrs.relay"
        record.msg = "malformed request from %s: %s (%d)%s"
        record.args = (source, type(exc).__name__, exc.code, skipped_note(skipped))
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_parser_filter() -> None:
    """Put :class:`ParserErrors` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserErrors) for f in logger.filters):
        logger.addFilter(ParserErrors())


def accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` log failing accepts in one line per interval (asyncio retries them)."""
    throttle = LogThrottle()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith(_ACCEPT_MESSAGES):
            loop.default_exception_handler(context)
            return
        skipped = throttle.allow("accept", message)
        if skipped is not None:
            exc = context.get("exception")
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            log.warning("%s: %s; new connections wait%s", message, why, skipped_note(skipped))

    loop.set_exception_handler(handler)

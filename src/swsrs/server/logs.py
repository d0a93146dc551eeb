"""Log lines of the relay: one line per event, UTC timestamps, on stderr.

``--log-format text`` (the default) writes ``TIME LEVEL logger: message``;
``--log-format json`` writes one JSON object per line with the same message
in ``msg`` and, for tunnel events and admin audit lines, their fields
(``event``, ``session``, ``role``, ``reason``, ``bytes_in``, ``sub``…)
as keys of their own: code logs them with ``extra={...}``.

Whatever the format, every line passes :func:`redact` last: bearer tokens,
``Authorization`` header values, ``token=`` query parameters, token fields
of a JSON body and anything shaped like a JWT are replaced, so a secret
that slips into a message or an exception (a malformed request echoed by a
parser, say) never reaches the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_SECRETS = re.compile(
    r"(?i)(\bbearer\s+)[^\s\"'\\,;<>]{8,}"
    r"|(\bauthorization\\?[\"']?\s*[:=]\s*\\?[\"']?(?:[a-z]+\s+)?)[^\s\"'\\,;<>]{8,}"
    r"|([?&;]token=)[^&\s\"'\\]+"
    r"|(\b(?:initiator_|responder_|access_|id_|refresh_)?token\\?[\"']?\s*[:=]\s*\\?[\"']?)"
    r"[A-Za-z0-9_\-.~+/]{8,}=*"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _keep_prefix(m: re.Match[str]) -> str:
    return next(g for g in m.groups() if g is not None) + "[redacted]"


def redact(text: str) -> str:
    """``text`` with every token-like secret replaced by ``[redacted]``."""
    return _JWT.sub("[redacted]", _SECRETS.sub(_keep_prefix, text))


def _utc(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# What every LogRecord has: anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _JSONFormatter(logging.Formatter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.worker:
            obj["worker"] = self.worker
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                obj[key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(obj, default=str, ensure_ascii=False))


def setup_logging(level: str, tag: str = "", *, fmt: str = "text") -> None:
    """Send every log line to stderr; ``tag`` (e.g. ``worker 1``) marks a worker's lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter(tag.removeprefix("worker ")))
    else:
        prefix = f"[{tag}] " if tag else ""
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(logging.WARNING)

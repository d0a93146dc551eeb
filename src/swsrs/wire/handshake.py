"""The server side of the RFC 6455 opening handshake, without I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from http import HTTPStatus

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def check_upgrade(headers: Mapping[str, str]) -> str | None:
    """Why a request is not a valid WebSocket upgrade, or ``None`` if it is."""
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return "expected a WebSocket upgrade (Upgrade: websocket)"
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    if "upgrade" not in tokens:
        return "expected Connection: Upgrade"
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return "unsupported Sec-WebSocket-Version (want 13)"
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "malformed Sec-WebSocket-Key"
    except (binascii.Error, ValueError):
        return "malformed Sec-WebSocket-Key"
    return None


def switching_protocols(key: str, subprotocol: str | None = None) -> bytes:
    """The complete ``101`` answer to a valid upgrade carrying ``Sec-WebSocket-Key: key``."""
    selected = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{selected}\r\n"
    ).encode()


def refusal(status: int, reason: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A complete plain-text HTTP/1.1 error response that closes the connection."""
    body = (reason + "\n").encode()
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body

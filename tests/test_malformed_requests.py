"""Malformed HTTP against a real relay (issue 14): a 4xx, never a 5xx; at most one log line
per source and interval, with no traceback and no byte of the request (a real token after
``Authorization: Bearer`` followed by a control byte never reaches the log). Each request is
sent on a new connection (read by the relay's own listener) and on a reused keep-alive
connection (read by aiohttp)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import Relay
from .test_abuse_limits import status_of

UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def cases(sid: str, token: str) -> dict[str, bytes]:
    s = sid.encode()
    return {
        "raw 0xff in the relay path": b"GET /relay/\xff\xfe HTTP/1.1\r\nHost: x\r\n" + UPGRADE,
        "surrogate id, percent-encoded": b"GET /relay/%ED%A0%80 HTTP/1.1\r\nHost: x\r\n" + UPGRADE,
        "0xff in the bearer token": b"GET /relay/" + s + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer \xff\xfe" + token[:4].encode() + b"\r\n" + UPGRADE,
        "raw 0xff in ?token=": b"GET /relay/"
        + s
        + b"?token=\xff HTTP/1.1\r\nHost: x\r\n"
        + UPGRADE,
        "%ff in ?token=": b"GET /relay/" + s + b"?token=%ff%fe HTTP/1.1\r\nHost: x\r\n" + UPGRADE,
        "0xff in Origin": b"GET /relay/"
        + s
        + b"?token="
        + token.encode()
        + b" HTTP/1.1\r\nHost: x\r\nOrigin: http://\xff\xfe\r\n"
        + UPGRADE,
        "control byte after a real relay token": b"GET /relay/" + s + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + token.encode() + b"\x01x\r\n" + UPGRADE,
        "control byte after a token, admin": b"GET /admin/sessions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + token.encode() + b"\x01x\r\n",
        "admin: surrogate id": b"GET /admin/sessions/%ED%A0%80 HTTP/1.1\r\nHost: x\r\n",
        "admin: raw 0xff id": b"DELETE /admin/sessions/\xff HTTP/1.1\r\nHost: x\r\n",
        "admin: 0xff in Origin": b"GET /admin/sessions HTTP/1.1\r\nHost: x\r\nOrigin: \xff\r\n",
        "bad header line": b"GET /admin/sessions HTTP/1.1\r\nno colon here\r\n",
        "NUL in the path": b"GET /relay/a\x00b HTTP/1.1\r\nHost: x\r\n" + UPGRADE,
        "bad version": b"GET /healthz HTTP/9.Z\r\nHost: x\r\n",
    }


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_malformed_requests_get_4xx_and_one_quiet_line(
    relay_factory: Any, tmp_path: Path, store: str
) -> None:
    url = "memory" if store == "memory" else f"sqlite:///{tmp_path}/s.db"
    relay: Relay = relay_factory("--store", url, "--failed-attach-limit", "0")
    s = relay.create()
    token = s["initiator_token"]
    statuses = {}
    for name, raw in cases(s["id"], token).items():
        for reused in (False, True):
            code, _ = await status_of(relay, raw + b"\r\n", keepalive_first=reused)
            statuses[name, reused] = code
    assert all(400 <= c < 500 for c in statuses.values()), statuses
    assert relay.request("GET", "/healthz")[0] == 200
    log = relay.log()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert token not in log and token[:8] not in log
    assert "\\xff" not in log and "\\x01" not in log


async def test_a_flood_of_malformed_requests_costs_one_log_line(relay: Relay) -> None:
    size0 = relay.log_path.stat().st_size
    for i in range(150):
        raw = b"GET /admin/sessions HTTP/1.1\r\nX-Junk: \x01" + str(i).encode() + b"\r\n\r\n"
        assert (await status_of(relay, raw, keepalive_first=i % 2 == 0))[0] == 400
    assert relay.request("GET", "/healthz")[0] == 200
    log = relay.log()
    assert len([ln for ln in log.splitlines() if "malformed request" in ln]) == 1, log
    assert relay.log_path.stat().st_size - size0 < 2000, log
    assert "Traceback" not in log

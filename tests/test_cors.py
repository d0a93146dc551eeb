"""The Origin allowlist and CORS (SPEC section 6): the pure matcher, then a real relay."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from swsrs.errors import ConfigError
from swsrs.server.config import load
from swsrs.server.control.cors import cors_headers
from swsrs.server.origins import OriginPolicy, origin_host, origin_refusal, pattern_problem

from .conftest import Relay

# -- the matcher -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://app.example.com", "app.example.com"),
        ("HTTPS://App.Example.COM", "app.example.com"),
        ("http://localhost:3000", "localhost:3000"),
        ("https://app.example.com:443", "app.example.com"),
        ("http://app.example.com:80", "app.example.com"),
        ("https://app.example.com:80", "app.example.com:80"),
        ("http://[::1]:8080", "[::1]:8080"),
        ("http://127.0.0.1:9", "127.0.0.1:9"),
        ("https://app.example.com/", "app.example.com"),
    ],
)
def test_origin_host(origin: str, host: str) -> None:
    assert origin_host(origin) == host


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "",
        "app.example.com",
        "//app.example.com",
        "https://",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "https://app.example.com:abc",
        "https://app.example.com:0",
        "https://app.example.com:99999",
        "https://app example.com",
        "https://[::1",
        "https://a..b",
        "garbage ☃",
        "https://app.example.com?x=1",
    ],
)
def test_malformed_origins_are_never_allowed(origin: str) -> None:
    assert origin_host(origin) is None
    assert not OriginPolicy(["*"]).allows(origin, host=origin)
    assert origin_refusal(OriginPolicy(["*"]), {"Origin": origin}) is not None


@pytest.mark.parametrize(
    ("pattern", "origin", "allowed"),
    [
        ("app.example.com", "https://app.example.com", True),
        ("app.example.com", "http://app.example.com", True),  # the scheme is not matched
        ("app.example.com", "https://APP.example.com", True),
        ("APP.Example.com", "https://app.example.com", True),
        ("app.example.com", "https://app.example.com:8443", False),  # a port must be named
        ("app.example.com", "https://app.example.com:443", True),  # the default port is none
        ("app.example.com", "https://evil.com", False),
        ("app.example.com", "https://app.example.com.evil.com", False),
        ("app.example.com", "https://xapp.example.com", False),
        ("*.example.com", "https://a.example.com", True),
        ("*.example.com", "https://example.com", False),  # not the apex
        ("*.example.com", "https://a.b.example.com", False),  # one label only
        ("*.example.com", "https://a.example.com:8443", False),
        ("*.example.com", "https://evilexample.com", False),
        ("*.example.com:*", "https://a.example.com:8443", True),
        ("localhost:*", "http://localhost:3000", True),
        ("localhost:*", "http://localhost:1", True),
        ("localhost:*", "http://localhost", False),  # a port-less origin needs `localhost`
        ("localhost:*", "http://localhost.evil.com:3000", False),
        ("localhost:*", "http://127.0.0.1:3000", False),
        ("localhost", "http://localhost", True),
        ("localhost", "http://localhost:3000", False),
        ("127.0.0.1:*", "http://127.0.0.1:5173", True),
        ("[::1]:*", "http://[::1]:5173", True),
        ("app-?.example.com", "https://app-1.example.com", True),
        ("app-?.example.com", "https://app-12.example.com", False),
        ("*", "https://anything.example.org:1234", True),  # a lone * allows every origin
        ("*", "null", False),
    ],
)
def test_pattern_matching(pattern: str, origin: str, allowed: bool) -> None:
    assert OriginPolicy([pattern]).allows(origin, host="relay.example.net") is allowed


def test_empty_allowlist_is_same_origin_only() -> None:
    p = OriginPolicy()
    assert p.allows("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert p.allows("https://relay.example.com", "relay.example.com")
    assert p.allows("https://relay.example.com", "relay.example.com:443")
    assert p.allows("https://Relay.Example.com", "RELAY.example.com")
    assert not p.allows("http://127.0.0.1:8081", "127.0.0.1:8080")
    assert not p.allows("http://localhost:8080", "127.0.0.1:8080")
    assert not p.allows("http://127.0.0.1:8080", None)
    assert not p.allows("null", "null")


def test_several_patterns_and_whitespace() -> None:
    p = OriginPolicy([" app.example.com ", "", "localhost:*"])
    assert p.patterns == ("app.example.com", "localhost:*")
    assert p.allows("https://app.example.com", None)
    assert p.allows("http://localhost:8000", None)
    assert not p.allows("https://other.example.com", None)


def test_origin_refusal() -> None:
    p = OriginPolicy(["app.example.com"])
    assert origin_refusal(p, {}) is None  # not a browser
    assert origin_refusal(p, {"Origin": "https://app.example.com"}) is None
    assert origin_refusal(p, {"Origin": "http://h:1", "Host": "h:1"}) is None
    reason = origin_refusal(p, {"Origin": "https://evil.com"})
    assert reason is not None and "evil.com" in reason and "--allowed-origins" in reason


# -- the CORS headers ------------------------------------------------------------------


def test_cors_headers_allowed_simple() -> None:
    h = cors_headers(OriginPolicy(["app.example.com"]), {"Origin": "https://app.example.com"})
    assert h == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": "https://app.example.com",
        "Access-Control-Allow-Credentials": "true",
    }


def test_cors_headers_preflight_defaults_and_echo() -> None:
    p = OriginPolicy(["app.example.com"])
    h = cors_headers(p, {"Origin": "https://app.example.com"}, preflight=True)
    assert h["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert h["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert h["Access-Control-Max-Age"] == "600"
    asked = {"Origin": "https://app.example.com", "Access-Control-Request-Headers": "x-a, b"}
    assert cors_headers(p, asked, preflight=True)["Access-Control-Allow-Headers"] == "x-a, b"


@pytest.mark.parametrize("headers", [{}, {"Origin": "https://evil.com"}, {"Origin": "null"}])
def test_cors_headers_disallowed_or_absent(headers: dict[str, str]) -> None:
    p = OriginPolicy(["app.example.com"])
    assert cors_headers(p, headers) == {"Vary": "Origin"}
    assert cors_headers(p, headers, preflight=True) == {"Vary": "Origin"}


# -- against a real relay -----------------------------------------------------------

ALLOWED = "http://app.example.com"
DISALLOWED = "http://evil.example.org"


@pytest.fixture
def strict_relay(relay_factory: Any) -> Relay:
    r: Relay = relay_factory("--allowed-origins", "app.example.com, localhost:*")
    return r


def lower(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/admin/sessions", 201),
        ("GET", "/admin/sessions", 200),
        ("GET", "/admin/sessions/nope", 404),
        ("DELETE", "/admin/sessions/nope", 404),
        ("GET", "/.well-known/swsrs-config", 404),
        ("GET", "/admin/unknown/path", 404),
        ("PUT", "/admin/sessions", 405),
    ],
)
def test_cors_on_admin_responses_errors_included(
    strict_relay: Relay, method: str, path: str, status: int
) -> None:
    code, h, _ = strict_relay.request(method, path, headers={"Origin": ALLOWED})
    h = lower(h)
    assert code == status
    assert h["access-control-allow-origin"] == ALLOWED
    assert h["access-control-allow-credentials"] == "true"
    assert "origin" in h["vary"].lower()
    code, h, _ = strict_relay.request(method, path, headers={"Origin": DISALLOWED})
    h = lower(h)
    # No CORS headers. /admin/* is also refused, so a request the browser sends
    # without a preflight cannot act; the public discovery answers as usual.
    assert code == (403 if path.startswith("/admin/") else status)
    assert not any(k.startswith("access-control-") for k in h)
    assert "origin" in h["vary"].lower()
    code, h, _ = strict_relay.request(method, path)
    assert "origin" in lower(h)["vary"].lower()
    assert not any(k.startswith("access-control-") for k in lower(h))


def test_preflight(strict_relay: Relay) -> None:
    ask = {
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "authorization",
    }
    code, h, _ = strict_relay.request("OPTIONS", "/admin/sessions/abc", headers=ask)
    h = lower(h)
    assert code == 204
    assert h["access-control-allow-origin"] == "http://localhost:5173"
    assert h["access-control-allow-methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert h["access-control-allow-headers"] == "authorization"
    assert h["access-control-max-age"] == "600"
    assert h["access-control-allow-credentials"] == "true"
    assert h["vary"] == "Origin"

    code, h, _ = strict_relay.request(
        "OPTIONS", "/.well-known/swsrs-config", headers={**ask, "Origin": DISALLOWED}
    )
    assert code == 403
    assert not any(k.startswith("access-control-") for k in lower(h))
    assert lower(h)["vary"] == "Origin"


def test_same_origin_allowed_with_empty_allowlist(relay: Relay) -> None:
    code, h, _ = relay.request("GET", "/admin/sessions", headers={"Origin": relay.url})
    assert code == 200 and lower(h)["access-control-allow-origin"] == relay.url
    code, h, _ = relay.request("GET", "/admin/sessions", headers={"Origin": ALLOWED})
    assert code == 403 and "access-control-allow-origin" not in lower(h)
    code, h, _ = relay.request("GET", "/.well-known/swsrs-config", headers={"Origin": ALLOWED})
    assert code == 404 and "access-control-allow-origin" not in lower(h)


def test_disallowed_origin_cannot_create_without_preflight(strict_relay: Relay) -> None:
    code, _, body = strict_relay.request("POST", "/admin/sessions", headers={"Origin": DISALLOWED})
    assert code == 403 and b"not allowed" in body
    assert strict_relay.request("GET", "/admin/sessions")[2] == b'{"sessions": []}'


def test_no_cors_outside_admin_and_well_known(strict_relay: Relay) -> None:
    code, h, _ = strict_relay.request("GET", "/healthz", headers={"Origin": ALLOWED})
    assert code == 200 and "access-control-allow-origin" not in lower(h)


async def ws_status(relay: Relay, sid: str, token: str, origin: str | None) -> int:
    url = f"{relay.ws_url}/relay/{sid}?token={token}"
    try:
        ws = await connect(url, origin=origin)  # type: ignore[arg-type]
    except websockets.InvalidStatus as exc:
        return int(exc.response.status_code)
    await ws.close()
    return 101


async def test_websocket_origin_check(strict_relay: Relay) -> None:
    s = strict_relay.create()
    sid, tok = s["id"], s["initiator_token"]
    assert await ws_status(strict_relay, sid, tok, DISALLOWED) == 403
    assert await ws_status(strict_relay, sid, tok, "null") == 403
    assert await ws_status(strict_relay, sid, tok, None) == 101  # not a browser
    assert await ws_status(strict_relay, sid, tok, ALLOWED) == 101
    assert await ws_status(strict_relay, sid, tok, "http://localhost:1234") == 101
    assert await ws_status(strict_relay, sid, tok, strict_relay.url) == 101  # same origin


async def test_websocket_refusal_order(strict_relay: Relay) -> None:
    """404, 401 (missing), 401 (wrong), 403 (origin), 409 (slot) — SPEC section 3."""
    s = strict_relay.create()
    sid = s["id"]
    assert await ws_status(strict_relay, "nope", "x", DISALLOWED) == 404
    assert await ws_status(strict_relay, sid, "", DISALLOWED) == 401
    assert await ws_status(strict_relay, sid, "wrong", DISALLOWED) == 401
    held = await connect(f"{strict_relay.ws_url}/relay/{sid}?token={s['initiator_token']}")
    try:
        assert await ws_status(strict_relay, sid, s["initiator_token"], DISALLOWED) == 403
        assert await ws_status(strict_relay, sid, s["initiator_token"], ALLOWED) == 409
    finally:
        await held.close()


async def test_websocket_origin_check_on_a_reused_keepalive_connection(strict_relay: Relay) -> None:
    """An upgrade after a plain request on the same connection is judged the same way."""
    s = strict_relay.create()
    r, w = await asyncio.open_connection("127.0.0.1", strict_relay.port)
    try:
        for origin, status in ((DISALLOWED, b" 403 "), (ALLOWED, b" 101 ")):
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            assert b" 200 " in head.split(b"\r\n")[0]
            await r.readexactly(2)  # "ok"
            key = base64.b64encode(os.urandom(16)).decode()
            w.write(
                f"GET /relay/{s['id']}?token={s['initiator_token']} HTTP/1.1\r\nHost: x\r\n"
                f"Origin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            assert status in head.split(b"\r\n")[0], head
            if status == b" 403 ":
                w.close()  # a refusal closes the connection; open a fresh one
                r, w = await asyncio.open_connection("127.0.0.1", strict_relay.port)
    finally:
        w.close()


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("app.example.com", None),
        ("*.example.com", None),
        ("localhost:*", None),
        ("127.0.0.1:8080", None),
        ("[::1]:*", None),
        ("https://app.example.com", "write the host pattern 'app.example.com'"),
        ("app.example.com/path", "not a host[:port] pattern"),
        ("app example.com", "not a host[:port] pattern"),
        ("host:port", "not a host[:port] pattern"),
    ],
)
def test_pattern_problem(pattern: str, problem: str | None) -> None:
    found = pattern_problem(pattern)
    assert found is None if problem is None else (found is not None and problem in found)


def test_bad_allowlist_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match=r"--allowed-origins: 'https://a\.example\.com' is a URL"):
        load({"no_auth": True, "allowed_origins": "ok.example.com, https://a.example.com"}, {})
    cfg = load({"no_auth": True}, {"SWSRS_ALLOWED_ORIGINS": " A.example.com ,localhost:*,"})
    assert cfg.allowed_origins == ("a.example.com", "localhost:*")


def test_serve_refuses_a_url_in_the_allowlist() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    r = subprocess.run(
        [sys.executable, "-m", "swsrs", "serve", "--no-auth", "--addr", "127.0.0.1:0",
         "--allowed-origins", "https://app.example.com"],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allowed-origins" in lines[0] and "app.example.com" in lines[0]


async def test_websocket_origin_check_with_workers(relay_factory: Any) -> None:
    """With --workers the front process admits, so the Origin check happens there."""
    relay: Relay = relay_factory("--workers", "2", "--allowed-origins", "app.example.com")
    s = relay.create()
    sid, tok = s["id"], s["responder_token"]
    assert await ws_status(relay, sid, tok, DISALLOWED) == 403
    assert await ws_status(relay, sid, tok, ALLOWED) == 101
    code, h, _ = relay.request("GET", "/admin/sessions", headers={"Origin": ALLOWED})
    assert code == 200 and lower(h)["access-control-allow-origin"] == ALLOWED

"""Log lines: ``--log-format json`` parses line by line, tunnel events and admin audit lines carry
their fields (the OIDC subject from the real test IdP), and no token ever reaches the output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from swsrs.server.logs import redact

from .conftest import Relay, oidc_flags, start_relay
from .oidc_idp import ALL_SCOPES, CI_CLIENT, IdP
from .test_relay import attach, closed_with

CREATE, READ, DELETE = ALL_SCOPES


def admin(relay: Relay, method: str, path: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    status, _, body = relay.request(method, path, headers=headers)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


async def raw(relay: Relay, data: bytes) -> bytes:
    """Send ``data`` on a new connection; what comes back before the relay closes it."""
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(data)
    try:
        async with asyncio.timeout(10):
            return await r.read(4096)
    finally:
        w.close()


async def full_run(relay: Relay, idp: IdP) -> list[str]:
    """Every kind of request the relay logs, each carrying a real token; returns the tokens."""
    every = idp.client_credentials(ALL_SCOPES)
    read_only = idp.client_credentials([READ])
    status, s = admin(relay, "POST", "/admin/sessions", every)
    assert status == 201, s
    _, other = admin(relay, "POST", "/admin/sessions", every)
    assert admin(relay, "POST", "/admin/sessions", read_only)[0] == 403
    assert admin(relay, "POST", "/admin/sessions", None)[0] == 401
    assert admin(relay, "GET", "/admin/sessions", every[:-4] + "AAAA")[0] == 401
    assert admin(relay, "GET", "/admin/sessions", read_only)[0] == 200
    secrets = [every, read_only, s["initiator_token"], s["responder_token"],
               other["initiator_token"], other["responder_token"]]  # fmt: skip

    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"], query=True)
    await a.send(b"x" * 1000)
    assert await b.recv() == b"x" * 1000
    await b.send(b"y" * 10)
    assert await a.recv() == b"y" * 10
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")

    # Refused attaches with real tokens: another session's, in the header and in the query.
    for url in (f"{relay.ws_url}/relay/{other['id']}?token={s['initiator_token']}",
                f"{relay.ws_url}/relay/unknown?token={other['responder_token']}"):  # fmt: skip
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(url)
    # Malformed requests that carry a token, on the data plane and on aiohttp's routes.
    tok = other["initiator_token"]
    for path in (f"/relay/{other['id']}?token={tok}", f"/admin/sessions?token={tok}"):
        head = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\x01\r\n"
                f"Upgrade: websocket\r\n\r\n").encode()  # fmt: skip
        await raw(relay, head)
        await raw(relay, head.replace(b"GET", b"G\x00T"))

    assert admin(relay, "GET", f"/admin/sessions/{s['id']}", every)[0] == 200
    assert admin(relay, "DELETE", f"/admin/sessions/{s['id']}", read_only)[0] == 403
    assert admin(relay, "DELETE", f"/admin/sessions/{s['id']}", every)[0] == 204
    return secrets


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_no_token_reaches_any_output(idp: IdP, tmp_path: Path, fmt: str) -> None:
    relay = start_relay(tmp_path, *oidc_flags(idp), "--log-format", fmt, "--workers", "2",
                        "--metrics-addr", "127.0.0.1:0", no_auth=False,
                        env={"SWSRS_LOG_LEVEL": "debug"})  # fmt: skip
    try:
        secrets = await full_run(relay, idp)
    finally:
        assert relay.stop() == 0
    out = relay.log()
    assert "tunnel closed" in out and "admin delete" in out
    for secret in [*secrets, CI_CLIENT[1]]:
        assert secret not in out
        # a JWT's signature alone is a secret too (its header and claims are not)
        assert secret.rsplit(".", 1)[-1] not in out


async def test_json_logs_parse_and_carry_tunnel_events_and_the_audit_trail(
    idp: IdP, tmp_path: Path
) -> None:
    relay = start_relay(tmp_path, *oidc_flags(idp), "--log-format", "json", "--workers", "2",
                        no_auth=False)  # fmt: skip
    try:
        every = idp.client_credentials(ALL_SCOPES)
        read_only = idp.client_credentials([READ])
        status, s = admin(relay, "POST", "/admin/sessions", every)
        assert status == 201
        assert admin(relay, "DELETE", f"/admin/sessions/{s['id']}", read_only)[0] == 403
        with pytest.raises(websockets.InvalidStatus):
            await attach(relay, s["id"], "A" * 22)
        a = await attach(relay, s["id"], s["initiator_token"])
        b = await attach(relay, s["id"], s["responder_token"])
        await a.send(b"a" * 300)
        await b.recv()
        await b.send(b"b" * 20)
        await a.recv()
        await b.close()
        await closed_with(a)
        assert admin(relay, "DELETE", f"/admin/sessions/{s['id']}", every)[0] == 204
    finally:
        relay.stop()
    lines = [json.loads(line) for line in relay.log().splitlines()]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= set(obj) for obj in lines)
    assert any(obj.get("worker") in ("0", "1") for obj in lines)  # the workers' lines too

    def events(kind: str) -> list[dict[str, Any]]:
        return [o for o in lines if o.get("event") == kind and o.get("session") == s["id"]]

    audit = events("audit")
    assert [(o["action"], o["outcome"]) for o in audit] == [
        ("create", 201), ("delete", 403), ("delete", 204)]  # fmt: skip
    for o in audit:
        assert o["sub"] == "swsrs-ci" and o["azp"] == "swsrs-ci" and o["logger"] == "swsrs.audit"
    assert sorted(o["role"] for o in events("attach")) == ["initiator", "responder"]
    assert len(events("paired")) == 1
    (refused,) = events("refused")
    assert refused["status"] == 401 and refused["reason"] == "invalid token for this session"
    (closed,) = events("closed")
    assert closed["bytes_in"] == 300 and closed["bytes_out"] == 20
    assert closed["reason"].startswith("closed by client (1000")
    assert 0 < closed["duration"] < 30
    detach = {o["role"]: o for o in events("detach")}
    assert detach["initiator"]["reason"] == "peer disconnected"


def test_redact_replaces_every_token_shape() -> None:
    tok = "AbCdEfGhIjKlMnOpQrStUv"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    for text in (f"Authorization: Bearer {tok}\\x01", f"GET /relay/x?token={tok} HTTP/1.1",
                 f"GET /relay/x?a=1&token={tok}", f'{{"initiator_token": "{tok}"}}',
                 json.dumps({"msg": f'body {{"responder_token": "{tok}"}}'}),
                 f"authorization: Basic {tok}", f"found {jwt} here"):  # fmt: skip
        out = redact(text)
        assert tok not in out and "c2lnbmF0dXJl" not in out and "[redacted]" in out, out
    for text in ("invalid token for this session", "missing token: send Authorization: Bearer "
                 "<token> or ?token=", "session AbCdEfGhIjKlMnOpQrStUv created"):  # fmt: skip
        assert redact(text) == text

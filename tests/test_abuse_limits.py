"""The relay's abuse limits (issue 14, item 2), each against a real relay process over
127.0.0.1 with raw sockets: token guessing, attach rate, slowloris and idle keep-alive,
--max-conns and descriptor exhaustion, per-session bandwidth, sessions per OIDC subject,
the admin body cap, and --trusted-proxies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from .conftest import LISTENING, SWSRS, Relay, oidc_flags, start_relay
from .oidc_idp import IdP
from .test_relay import attach, closed_with, upgrade_head

LOOPBACK_2 = "127.0.0.2"  # another source address on the same machine (Linux routes 127/8)


async def status_of(
    relay: Relay,
    raw: bytes,
    *,
    source: str = "127.0.0.1",
    keepalive_first: bool = False,
) -> tuple[int, bytes]:
    """Send one raw request on a new connection from ``source``; the status and the head.

    ``keepalive_first``: first a plain ``GET /healthz`` on the same connection, so the
    request is read by aiohttp (a reused keep-alive connection), not by the listener.
    """
    r, w = await asyncio.open_connection("127.0.0.1", relay.port, local_addr=(source, 0))
    try:
        if keepalive_first:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await r.readexactly(length)
        w.write(raw)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        return int(head.split(b" ", 2)[1]), head
    finally:
        w.close()


def lines(relay: Relay, needle: str) -> list[str]:
    return [ln for ln in relay.log().splitlines() if needle in ln]


# -- wrong tokens and unknown sessions -----------------------------------------------------


async def test_token_guessing_is_slowed_to_429_and_the_right_token_still_works(
    relay_factory: Any,
) -> None:
    relay = relay_factory("--failed-attach-limit", "6/2s", "--attach-rate", "0")
    s = relay.create()
    sid, right = s["id"], s["initiator_token"]
    codes = []
    for i in range(6):  # wrong tokens and unknown sessions count alike
        path_sid = sid if i % 2 else "no-such-session-id-000"
        codes.append((await status_of(relay, upgrade_head(path_sid, f"guess{i}")))[0])
    assert codes == [404, 401] * 3
    code, head = await status_of(relay, upgrade_head(sid, "guess-7"))
    assert code == 429 and re.search(rb"\r\nRetry-After: [12]\r\n", head), head
    # Blocked means blocked: even the right token, and on the aiohttp (keep-alive) path too.
    assert (await status_of(relay, upgrade_head(sid, right)))[0] == 429
    assert (await status_of(relay, upgrade_head(sid, right), keepalive_first=True))[0] == 429
    # Another address is not affected.
    assert (await status_of(relay, upgrade_head(sid, right), source=LOOPBACK_2))[0] == 101
    await asyncio.sleep(2.2)  # the window has passed: the right token works from here again
    assert (await status_of(relay, upgrade_head(sid, s["responder_token"])))[0] == 101
    # One line per source and status per interval, not one per attempt; never a token.
    log = relay.log()
    assert len(lines(relay, "status=401")) == 1 and len(lines(relay, "status=404")) == 1, log
    assert len(lines(relay, "status=429")) == 1, log
    assert "guess" not in log and right not in log


async def test_attaches_per_second_per_address(relay_factory: Any) -> None:
    relay = relay_factory("--attach-rate", "4/1s", "--failed-attach-limit", "0")
    s = relay.create()
    codes = [(await status_of(relay, upgrade_head(s["id"], "x")))[0] for _ in range(6)]
    assert codes[:4] == [401] * 4 and codes[4:] == [429, 429], codes
    assert (await status_of(relay, upgrade_head(s["id"], "x"), source=LOOPBACK_2))[0] == 401
    await asyncio.sleep(0.6)  # refilled at 4/s: two more
    assert (await status_of(relay, upgrade_head(s["id"], "x")))[0] == 401
    a = await attach(relay, s["id"], s["initiator_token"])
    await a.close()


# -- slowloris, idle keep-alive --------------------------------------------------------------


async def _closed_after(r: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the relay closes the connection (EOF or reset), at most ``limit``."""
    t0 = time.monotonic()
    async with asyncio.timeout(limit):
        try:
            while await r.read(65536):
                pass
        except ConnectionError:
            pass
    return time.monotonic() - t0


async def _drip(w: asyncio.StreamWriter, start: bytes, stop: asyncio.Event) -> None:
    w.write(start)
    while not stop.is_set() and not w.is_closing():
        await asyncio.sleep(0.2)
        w.write(b"X")  # one header byte at a time, never a line end


async def test_slowloris_is_closed_within_the_header_timeout_while_a_tunnel_flows(
    relay_factory: Any,
) -> None:
    relay = relay_factory("--header-timeout", "1s")
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"])
    stop = asyncio.Event()
    starts = {
        "silent": b"",
        "relay head": b"GET /relay/x HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "aiohttp head": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "admin head": b"POST /admin/sessions HTTP/1.1\r\nX-Slow: ",
    }
    conns = {k: await asyncio.open_connection("127.0.0.1", relay.port) for k in starts}
    drips = [asyncio.create_task(_drip(w, starts[k], stop)) for k, (_, w) in conns.items()]
    # The second request of a keep-alive connection that aiohttp serves, dripped too.
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(r.readuntil(b"\r\n\r\nok"), 5)
    conns["keep-alive head"] = (r, w)
    drips.append(asyncio.create_task(_drip(w, b"GET /healthz HTTP/1.1\r\nX-Slow: ", stop)))

    async def tunnel() -> int:
        n = 0
        while not stop.is_set():
            await a.send(b"x" * 1000)
            assert await b.recv() == b"x" * 1000
            n += 1
            await asyncio.sleep(0.02)
        return n

    flowing = asyncio.create_task(tunnel())
    took = await asyncio.gather(*(_closed_after(r, 5) for r, _ in conns.values()))
    stop.set()
    assert all(t < 2.5 for t in took), dict(zip(conns, took, strict=True))
    assert await flowing > 20  # the tunnel kept going all along
    await a.send(b"still here")
    assert await b.recv() == b"still here"
    for d in drips:
        d.cancel()
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")
    assert "Traceback" not in relay.log()


async def test_an_idle_keepalive_connection_is_closed(relay_factory: Any) -> None:
    relay = relay_factory("--keepalive-timeout", "1s")
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(r.readuntil(b"\r\n\r\nok"), 5)
    assert await _closed_after(r, 5) < 3
    w.close()


# -- --max-conns and descriptor exhaustion ------------------------------------------------


async def test_beyond_max_conns_new_connections_are_refused_and_healthz_answers(
    relay_factory: Any,
) -> None:
    relay = relay_factory("--max-conns", "12", "--header-timeout", "30s")
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"])
    idle = [await asyncio.open_connection("127.0.0.1", relay.port) for _ in range(10)]
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    code, head = await status_of(relay, upgrade_head(s["id"], s["initiator_token"]))
    assert code == 503 and b"Retry-After" in head and time.monotonic() - t0 < 1
    assert relay.request("GET", "/healthz")[::2] == (200, b"ok")  # alive, and says so
    await a.send(b"existing tunnels are untouched")
    assert await b.recv() == b"existing tunnels are untouched"
    for _, w in idle:
        w.close()
    await asyncio.sleep(0.3)
    assert relay.request("GET", f"/admin/sessions/{s['id']}")[0] == 200  # room again
    assert len(lines(relay, "--max-conns")) == 1, relay.log()  # one line, not one each
    await a.close()
    await closed_with(b)


def _start_limited(tmp_path: Path, nofile: int, *extra: str) -> Relay:
    """``swsrs serve`` with RLIMIT_NOFILE lowered to ``nofile`` (soft and hard)."""
    log_path = tmp_path / "limited-relay.log"
    args = [*SWSRS, "serve", "--no-auth", "--addr", "127.0.0.1:0", *extra]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWSRS_LOG_LEVEL": "info"}
    with log_path.open("w") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, text=True, env=env,
                                preexec_fn=lower)  # noqa: PLW1509 (no threads here)  # fmt: skip
    relay = Relay(url="", port=0, proc=proc, log_path=log_path, args=args)
    deadline = time.monotonic() + 30
    while not relay.port:
        assert proc.poll() is None and time.monotonic() < deadline, relay.log()
        if m := LISTENING.search(relay.log()):
            relay.port = int(m.group(2))
            relay.url = f"http://127.0.0.1:{relay.port}"
        time.sleep(0.05)
    return relay


async def test_descriptor_exhaustion_never_takes_the_relay_down(tmp_path: Path) -> None:
    relay = _start_limited(tmp_path, 200)
    try:
        s = relay.create()
        a = await attach(relay, s["id"], s["initiator_token"])
        b = await attach(relay, s["id"], s["responder_token"])
        stalled = []
        for _ in range(260):  # more stalled requests than the process has descriptors
            sock = socket.socket()
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.connect(("127.0.0.1", relay.port))
            stalled.append(sock)
        await asyncio.sleep(0.5)
        for sock in stalled:
            with contextlib.suppress(OSError):  # refused (closed) already
                sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        size0 = relay.log_path.stat().st_size
        t0 = time.monotonic()
        for _ in range(5):
            assert await asyncio.to_thread(relay.request, "GET", "/healthz") == (200, ANY, b"ok")
        assert time.monotonic() - t0 < 5
        await a.send(b"through it all")
        assert await b.recv() == b"through it all"
        await asyncio.sleep(2)
        grown = relay.log_path.stat().st_size - size0
        assert grown < 4000, relay.log()[-4000:]
        assert "Traceback" not in relay.log()
        for sock in stalled:
            sock.close()
        await a.close()
        await closed_with(b)
    finally:
        relay.stop()


# -- per-session bandwidth -----------------------------------------------------------------


async def test_a_bandwidth_limited_session_runs_at_its_limit(relay_factory: Any) -> None:
    relay = relay_factory("--session-bandwidth", "1MiB")
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"])
    chunk = b"b" * 65536
    total = 4 * 1024 * 1024  # 1 MiB of burst, then 3 MiB at 1 MiB/s (the last read unpaced)

    async def send() -> None:
        for _ in range(total // len(chunk)):
            await a.send(chunk)

    t0 = time.monotonic()
    sender = asyncio.create_task(send())
    got = 0
    while got < total:
        got += len(await b.recv())
    took = time.monotonic() - t0
    await sender
    assert 1.8 < took < 5, took
    # The other direction has a bucket of its own, and it is full.
    t0 = time.monotonic()
    await b.send(chunk * 8)
    assert len(await a.recv()) == len(chunk) * 8 and time.monotonic() - t0 < 0.8
    await a.close()
    await closed_with(b)


# -- admin API: body size, sessions per subject --------------------------------------------


async def test_admin_request_bodies_are_capped(relay_factory: Any) -> None:
    relay = relay_factory("--max-admin-body", "1KiB")
    assert relay.request("POST", "/admin/sessions", body=b"{}")[0] == 201
    code, _, body = relay.request("POST", "/admin/sessions", body=b"x" * 2000)
    assert code == 413 and b"1024 bytes" in body
    # A huge declared length is refused at once, before the body is sent.
    code, _ = await status_of(
        relay, b"POST /admin/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
    )
    assert code == 413
    chunked = b"800\r\n" + b"y" * 0x800 + b"\r\n0\r\n\r\n"
    code, _ = await status_of(
        relay,
        b"POST /admin/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert code == 413
    assert relay.request("GET", "/admin/sessions")[0] == 200


def test_live_sessions_per_oidc_subject_are_capped(idp: IdP, tmp_path: Path) -> None:
    relay = start_relay(tmp_path, *oidc_flags(idp), "--max-sessions-per-subject", "2",
                        no_auth=False)  # fmt: skip
    try:
        alice, bob = idp.forge({"sub": "alice"}), idp.forge({"sub": "bob"})

        def call(method: str, path: str, token: str) -> tuple[int, dict[str, str], bytes]:
            return relay.request(method, path, headers={"Authorization": f"Bearer {token}"})

        made = [json.loads(call("POST", "/admin/sessions", alice)[2])["id"] for _ in range(2)]
        code, headers, body = call("POST", "/admin/sessions", alice)
        assert code == 429 and b"2 live sessions" in body and "Retry-After" in headers
        assert call("POST", "/admin/sessions", bob)[0] == 201  # another subject
        assert call("DELETE", f"/admin/sessions/{made[0]}", alice)[0] == 204
        assert call("POST", "/admin/sessions", alice)[0] == 201  # the slot came back
        assert call("POST", "/admin/sessions", alice)[0] == 429
        # A bearer token that is not even UTF-8 is a 401, not a 500.
        raw = b"GET /admin/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
        code, _ = asyncio.run(status_of(relay, raw))
        assert code == 401
        assert "Traceback" not in relay.log()
    finally:
        relay.stop()


# -- --trusted-proxies ------------------------------------------------------------------------


async def test_forwarded_addresses_count_only_from_trusted_proxies(relay_factory: Any) -> None:
    limits = ("--failed-attach-limit", "2/1m", "--attach-rate", "0")
    trusting = relay_factory(*limits, "--trusted-proxies", "127.0.0.1/32")
    s = trusting.create()

    def via(client: str, *, forwarded: bool = False) -> bytes:
        hdr = f"Forwarded: for={client};proto=http\r\n" if forwarded else (
            f"X-Forwarded-For: 198.51.100.1, {client}\r\n")  # fmt: skip
        return upgrade_head(s["id"], "wrong", hdr)

    codes = [(await status_of(trusting, via("203.0.113.7")))[0] for _ in range(3)]
    assert codes == [401, 401, 429]
    assert (await status_of(trusting, via("203.0.113.8")))[0] == 401  # another client
    assert (await status_of(trusting, via('"[2001:db8::1]:4711"', forwarded=True)))[0] == 401
    # From an address that is not a trusted proxy the header is ignored.
    assert (await status_of(trusting, via("203.0.113.9"), source=LOOPBACK_2))[0] == 401
    assert (await status_of(trusting, via("203.0.113.10"), source=LOOPBACK_2))[0] == 401
    assert (await status_of(trusting, via("203.0.113.11"), source=LOOPBACK_2))[0] == 429
    assert "remote=203.0.113.7 " in trusting.log()
    # Without --trusted-proxies, nobody's header counts.
    plain = relay_factory(*limits)
    s = plain.create()
    codes = [(await status_of(plain, via(f"203.0.113.{i}")))[0] for i in range(3)]
    assert codes == [401, 401, 429]
    assert "203.0.113" not in plain.log()


def test_bad_limit_flags_are_usage_errors(tmp_path: Path) -> None:
    for flags in (["--attach-rate", "fast"], ["--header-timeout", "0s"],
                  ["--max-conns", "0"], ["--trusted-proxies", "10.0.0.0/33"],
                  ["--session-bandwidth", "lots"]):  # fmt: skip
        p = subprocess.run([*SWSRS, "serve", "--no-auth", *flags], capture_output=True,
                           text=True, timeout=30)  # fmt: skip
        assert p.returncode == 2, (flags, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert flags[0] in p.stderr, p.stderr


# -- every refusal counted, each kind logged once -----------------------------------------


async def test_every_refusal_is_counted_in_the_metrics_and_logged_once(
    relay_factory: Any,
) -> None:
    relay = relay_factory("--metrics-addr", "127.0.0.1:0", "--failed-attach-limit", "2/1m",
                          "--attach-rate", "0", "--max-admin-body", "100",
                          "--header-timeout", "1s")  # fmt: skip
    s = relay.create()
    codes = [(await status_of(relay, upgrade_head(s["id"], "wrong")))[0] for _ in range(5)]
    assert codes == [401, 401, 429, 429, 429]
    assert relay.request("POST", "/admin/sessions", body=b"x" * 200)[0] == 413
    for _ in range(3):
        raw = b"GET /healthz HTTP/1.1\r\nX: \x01\r\n\r\n"
        assert (await status_of(relay, raw, keepalive_first=True))[0] == 400
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    w.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    assert await _closed_after(r, 5) < 2.5
    w.close()
    at = re.search(r"metrics on http://(127\.0\.0\.1:\d+)/metrics", relay.log())
    assert at is not None, relay.log()
    exporter = Relay(url=f"http://{at.group(1)}", port=0, proc=relay.proc,
                     log_path=relay.log_path)  # fmt: skip
    status, _, body = await asyncio.to_thread(exporter.request, "GET", "/metrics")
    assert status == 200
    text = body.decode()

    def value(name: str, label: str) -> float:
        m = re.search(rf"^{name}\{{{label}\}} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    assert value("swsrs_attaches_total", 'outcome="401"') == 2
    assert value("swsrs_attaches_total", 'outcome="429"') == 3
    assert value("swsrs_limit_refusals_total", 'kind="token_guessing"') == 3
    assert value("swsrs_limit_refusals_total", 'kind="admin_body"') == 1
    assert value("swsrs_limit_refusals_total", 'kind="malformed_request"') == 3
    assert value("swsrs_limit_refusals_total", 'kind="header_timeout"') == 1
    assert len(lines(relay, "status=429")) == 1 and len(lines(relay, "malformed request")) == 1

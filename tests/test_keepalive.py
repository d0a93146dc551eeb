"""The relay's keepalive and idle timeout, against raw sockets, the websockets library and
the real CLI."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

from .conftest import SWSRS, Relay
from .test_relay import attach, closed_with, raw_open, read_frame


async def test_a_peer_that_never_answers_pings_is_cut_and_its_counterpart_released(
    relay_factory: Any,
) -> None:
    relay: Relay = relay_factory("--ping-interval", "1s", "--ping-timeout", "1s")
    s = relay.create()
    r, w, head = await raw_open(relay, f"/relay/{s['id']}", s["initiator_token"])
    assert head.startswith(b"HTTP/1.1 101")
    b = await attach(relay, s["id"], s["responder_token"])  # websockets answers pings itself
    started = time.monotonic()
    opcode, _ = await asyncio.wait_for(read_frame(r), 10)  # the raw client is pinged…
    assert opcode == 0x9
    # …and, never answering, is cut; the other side is released.
    assert await closed_with(b) == (1000, "peer disconnected")
    assert 1.5 < time.monotonic() - started < 8
    assert "no answer to the relay's ping within 1s" in relay.log()
    w.close()


async def test_a_peer_that_answers_stays_through_a_long_silence(relay_factory: Any) -> None:
    relay: Relay = relay_factory("--ping-interval", "0.3s", "--ping-timeout", "0.5s")
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"])
    b = await attach(relay, s["id"], s["responder_token"])
    await asyncio.sleep(3)  # ten ping rounds of silence, answered by the library
    await a.send(b"still here")
    assert await b.recv() == b"still here"
    await a.close()


def test_an_idle_tunnel_is_ended_and_both_cli_ends_say_why(relay_factory: Any) -> None:
    relay: Relay = relay_factory("--idle-timeout", "1s")
    s = relay.create()
    procs = []
    for token, role in (("initiator_token", "initiator"), ("responder_token", "responder")):
        argv = [*SWSRS, "raw", "--url", relay.url, "--session", s["id"], "--token", s[token]]
        procs.append(
            subprocess.Popen(
                [*argv, "--role", role],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for p in procs:  # stdin stays open and silent: nothing moves
            _, err = p.communicate(timeout=20)
            assert p.returncode == 1, err
            assert (
                err.strip()
                .splitlines()[-1]
                .startswith("swsrs raw: the relay ended the idle tunnel: tunnel idle for 1s")
            ), err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

"""The relay's ``swsrs.v1`` signals, seen by an independent client (the ``websockets`` library).

A peer that offers the subprotocol is told when it waits and when its
counterpart arrives; a peer that offers nothing sees exactly what it saw
before, byte for byte (the reference CLI and SDK are such peers).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from .conftest import Relay
from .test_relay import closed_with

V1 = Subprotocol("swsrs.v1")


async def attach(
    relay: Relay, sid: str, token: str, protocols: list[str] | None = None
) -> ClientConnection:
    return await connect(
        f"{relay.ws_url}/relay/{sid}",
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[Subprotocol(p) for p in protocols] if protocols else None,
        max_size=None,
    )


async def signal(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        msg = await ws.recv()
    assert isinstance(msg, str), msg
    return dict(json.loads(msg))


async def nothing_within(ws: ClientConnection, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await ws.recv()


@pytest.mark.parametrize("workers", [0, 2])
async def test_two_v1_peers_hear_waiting_then_paired_with_each_others_features(
    relay_factory: Any, workers: int
) -> None:
    relay = relay_factory("--peer-wait", "90s", *(["--workers", str(workers)] if workers else []))
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"],
                     ["swsrs.v1", "swsrs.resume", "swsrs.Not_A_Feature!"])  # fmt: skip
    assert a.subprotocol == V1
    waiting = await signal(a)
    assert waiting["type"] == "waiting" and 85 < waiting["wait"] <= 90
    b = await attach(relay, s["id"], s["responder_token"], ["swsrs.v1", "swsrs.streams"])
    assert b.subprotocol == V1
    assert await signal(b) == {"type": "paired", "features": ["resume"]}  # no "waiting" for b
    assert await signal(a) == {"type": "paired", "features": ["streams"]}
    await a.send(b"after the signals, the peers' own messages, verbatim")
    assert await b.recv() == b"after the signals, the peers' own messages, verbatim"
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")


async def test_a_raw_peer_sees_nothing_new_and_its_early_bytes_follow_the_signal(
    relay: Relay,
) -> None:
    s = relay.create()
    raw = await attach(relay, s["id"], s["initiator_token"])  # offers nothing: the reference
    assert raw.subprotocol is None
    await raw.send(b"sent before the other side came")
    await raw.send("and a text message")
    await nothing_within(raw)  # no waiting signal for it
    v1 = await attach(relay, s["id"], s["responder_token"], ["swsrs.v1"])
    assert await signal(v1) == {"type": "paired", "features": None}
    assert await v1.recv() == b"sent before the other side came"
    assert await v1.recv() == "and a text message"
    await v1.send(b"\x00reply")
    assert await raw.recv() == b"\x00reply"  # the first thing the raw peer ever receives
    await v1.close()
    assert await closed_with(raw) == (1000, "peer disconnected")


async def test_peers_that_offer_nothing_get_no_signal_and_no_subprotocol(relay: Relay) -> None:
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"], ["something.else"])
    b = await attach(relay, s["id"], s["responder_token"])
    assert a.subprotocol is None and b.subprotocol is None
    await nothing_within(a)
    await nothing_within(b)
    await b.send("hello")
    assert await a.recv() == "hello"
    await a.close()


async def test_a_lone_v1_peer_is_told_why_it_is_closed(relay_factory: Any) -> None:
    relay = relay_factory("--peer-wait", "1s")
    s = relay.create()
    a = await attach(relay, s["id"], s["initiator_token"], ["swsrs.v1"])
    assert (await signal(a))["type"] == "waiting"
    assert await closed_with(a) == (1001, "peer did not attach within 1s")
    assert "refused attach" not in relay.log()
    bad = relay.create()
    with pytest.raises(Exception, match="401"):
        await attach(relay, bad["id"], "wrong-token", ["swsrs.v1"])
    await asyncio.sleep(0.2)
    line = next(ln for ln in relay.log().splitlines() if "refused attach" in ln)
    assert f"session={bad['id']}" in line and "status=401" in line and "remote=127.0.0.1:" in line
    assert "wrong-token" not in relay.log()

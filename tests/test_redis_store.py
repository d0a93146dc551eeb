"""``--store redis://``: a real ``redis-server`` on 127.0.0.1, one or two real relays on it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from swsrs.server.stores.base import hash_token

from .cluster import REDIS as REDIS_SERVER
from .cluster import RedisServer
from .conftest import Relay, free_port, start_relay
from .test_relay import attach, closed_with, old_tokens_still_work

pytestmark = pytest.mark.skipif(
    not Path(REDIS_SERVER).exists(), reason="needs redis-server (apt-get install redis-server)"
)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait, up to 30 s, for ``condition``: no timing assertions, only an upper bound."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.1)


def listing(relay: Relay) -> list[dict[str, Any]]:
    code, _, body = relay.request("GET", "/admin/sessions")
    assert code == 200, body
    return list(json.loads(body)["sessions"])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Any]:
    """Start relays with flags; every one is stopped at teardown."""
    started: list[Relay] = []

    def make(*extra: str) -> Relay:
        r = start_relay(tmp_path, *extra)
        started.append(r)
        return r

    try:
        yield make
    finally:
        for r in started:
            r.stop()


async def test_sessions_survive_a_relay_restart(redis_server: RedisServer, tmp_path: Path) -> None:
    relay = start_relay(tmp_path, "--store", redis_server.url)
    try:
        s = relay.create()
        before = relay.status(s["id"])
    finally:
        assert relay.stop() == 0
    relay = start_relay(tmp_path, "--store", redis_server.url)
    try:
        assert before is not None
        await old_tokens_still_work(relay, s, before)
        assert relay.status(s["id"]) is None
    finally:
        relay.stop()


async def test_tokens_are_stored_as_digests_only(redis_server: RedisServer, tmp_path: Path) -> None:
    relay = start_relay(tmp_path, "--store", redis_server.url)
    try:
        s = relay.create()
        a = await attach(relay, s["id"], s["initiator_token"])
        relay.wait_status(s["id"], lambda st: st["initiator_connected"])
        await asyncio.sleep(1.5)  # a live-state flush has happened
        raw = redis_server.dump()
        await a.close()
    finally:
        relay.stop()
    assert b"swsrs:live:" + s["id"].encode() in raw
    for token in (s["initiator_token"], s["responder_token"]):
        assert token.encode() not in raw
        assert hash_token(token) in raw
    h = redis_server.client().hgetall(f"swsrs:session:{s['id']}")
    assert len(h[b"i"]) == 32 and len(h[b"r"]) == 32  # SHA-256 digests
    assert redis_server.client().ttl(f"swsrs:session:{s['id']}") > 0  # Redis's own expiry


async def test_ttl_expiry_removes_the_keys_and_disconnects_peers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    relay = start_relay(tmp_path, "--store", redis_server.url, "--session-ttl", "3s",
                        "--reap-interval", "1s")  # fmt: skip
    try:
        s = relay.create()
        idle = relay.create()  # nobody attached: only the reaper and Redis end it
        a = await attach(relay, s["id"], s["initiator_token"])
        b = await attach(relay, s["id"], s["responder_token"])
        assert await closed_with(a) == (1001, "session expired")
        assert await closed_with(b) == (1001, "session expired")
        c = redis_server.client()
        await eventually(lambda: c.keys("swsrs:*") == [])
        assert relay.status(s["id"]) is None and relay.status(idle["id"]) is None
    finally:
        relay.stop()


async def test_two_relays_share_sessions_events_and_live_state(
    redis_server: RedisServer, relays: Any
) -> None:
    a_relay = relays("--store", redis_server.url, "--node-id", "node-a")
    b_relay = relays("--store", redis_server.url, "--node-id", "node-b")
    s = a_relay.create()
    t = b_relay.create()
    # Visible both ways.
    assert b_relay.status(s["id"]) is not None and a_relay.status(t["id"]) is not None
    for r in (a_relay, b_relay):
        ids = {x["id"] for x in listing(r)}
        assert {s["id"], t["id"]} <= ids

    a = await attach(a_relay, s["id"], s["initiator_token"])
    b = await attach(a_relay, s["id"], s["responder_token"])
    await a.send(b"x" * 100)
    assert await b.recv() == b"x" * 100
    await b.send(b"y" * 7)
    assert await a.recv() == b"y" * 7
    # B reads what A flushed (once a second): both slots held, the counters.
    st = b_relay.wait_status(s["id"], lambda st: st["state"] == "open" and st["bytes_out"] == 7)
    assert st is not None
    assert st["initiator_connected"] and st["responder_connected"] and st["bytes_in"] == 100
    listed = {x["id"]: x for x in listing(b_relay)}
    assert listed[s["id"]]["state"] == "open"

    # DELETE on B closes the peers held by A.
    assert b_relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert await closed_with(a) == (1000, "session deleted")
    assert await closed_with(b) == (1000, "session deleted")
    assert a_relay.status(s["id"]) is None
    assert "node-b" in a_relay.log() and "Traceback" not in a_relay.log()


async def test_a_relay_with_workers_among_nodes(redis_server: RedisServer, relays: Any) -> None:
    a_relay = relays("--store", redis_server.url, "--workers", "2")
    b_relay = relays("--store", redis_server.url)
    s = b_relay.create()
    a = await attach(a_relay, s["id"], s["initiator_token"])
    b = await attach(a_relay, s["id"], s["responder_token"])
    await a.send(b"z" * 10)
    assert await b.recv() == b"z" * 10
    b_relay.wait_status(s["id"], lambda st: st["state"] == "open" and st["bytes_in"] == 10)
    assert b_relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert await closed_with(a) == (1000, "session deleted")
    assert await closed_with(b) == (1000, "session deleted")


def test_a_read_only_replica_answers_503(redis_server: RedisServer, tmp_path: Path) -> None:
    replica = RedisServer(tmp_path / "replica",
                          args=["--replicaof", "127.0.0.1", str(redis_server.port)])  # fmt: skip
    replica.directory.mkdir()
    replica.start()
    try:
        relay = start_relay(tmp_path, "--store", replica.url)
        try:
            code, _, body = relay.request("POST", "/admin/sessions")
            assert code == 503 and b"read only replica (the URL points at a replica" in body, body
            assert b"HSET" not in body and body.count(b"\n") == 1
            assert relay.request("GET", "/admin/sessions")[0] == 200  # reads still work
            assert "Traceback" not in relay.log()
        finally:
            relay.stop()
    finally:
        replica.stop()


async def test_redis_down_mid_tunnel(redis_server: RedisServer, tmp_path: Path) -> None:
    relay = start_relay(tmp_path, "--store", redis_server.url, "--reap-interval", "1s")
    try:
        s = relay.create()
        a = await attach(relay, s["id"], s["initiator_token"])
        b = await attach(relay, s["id"], s["responder_token"])
        await a.send(b"before")
        assert await b.recv() == b"before"

        redis_server.stop()
        await a.send(b"while redis is down")  # the hot path never asks the store
        assert await b.recv() == b"while redis is down"
        for method, path in [("POST", "/admin/sessions"), ("GET", "/admin/sessions"),
                             ("GET", f"/admin/sessions/{s['id']}"),
                             ("DELETE", f"/admin/sessions/{s['id']}")]:  # fmt: skip
            code, _, body = relay.request(method, path)
            assert code == 503, (method, path, body)
            assert body.startswith(b"session store unavailable: ") and b"unreachable" in body
            assert body.count(b"\n") == 1
        with pytest.raises(InvalidStatus) as refused:  # a new attach cannot be checked
            await attach(relay, s["id"], s["initiator_token"])
        assert refused.value.response.status_code == 503
        code, _, body = relay.request("GET", "/readyz")
        assert code == 503 and b"session store unavailable" in body
        assert relay.request("GET", "/healthz")[0] == 200  # alive, just not ready
        await asyncio.sleep(2.5)  # the reaper and the flush meet the outage too

        redis_server.start()  # same port, empty (no persistence)
        assert relay.request("POST", "/admin/sessions")[0] == 201  # first call reconnects
        assert relay.request("GET", "/readyz")[0] == 200
        await b.send(b"after")
        assert await a.recv() == b"after"
        await a.close()
        assert await closed_with(b) == (1000, "peer disconnected")
        await eventually(lambda: "live state flushed again" in relay.log())
        log = relay.log()
        assert "Traceback" not in log
        assert log.count("live state not flushed") == 1 and "live state flushed again" in log
    finally:
        relay.stop()


async def test_events_resume_after_a_redis_restart(redis_server: RedisServer, relays: Any) -> None:
    a_relay = relays("--store", redis_server.url)
    b_relay = relays("--store", redis_server.url)
    redis_server.stop()
    await asyncio.sleep(1.5)
    redis_server.start()
    s = a_relay.create()
    a = await attach(a_relay, s["id"], s["initiator_token"])
    # A resubscribes within a second or two; until then a DELETE's event is lost,
    # so delete only once A is listening again.
    c = redis_server.client()
    await eventually(lambda: c.pubsub_numsub("swsrs:events")[0][1] == 2)
    assert b_relay.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert await closed_with(a) == (1000, "session deleted")


def test_unreachable_at_start_then_ready(tmp_path: Path, relays: Any) -> None:
    server = RedisServer(tmp_path, port=free_port())
    relay = relays("--store", server.url)
    try:
        assert "starting anyway" in relay.log()
        code, _, body = relay.request("GET", "/readyz")
        assert code == 503 and b"unreachable" in body
        assert relay.request("POST", "/admin/sessions")[0] == 503
        server.start()
        assert relay.request("GET", "/readyz")[0] == 200
        assert relay.request("POST", "/admin/sessions")[0] == 201
        assert "Traceback" not in relay.log()
    finally:
        server.stop()


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swsrs", "serve", "--no-auth", "--addr", "127.0.0.1:0", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_database_that_does_not_exist_exits_1(redis_server: RedisServer) -> None:
    p = serve("--store", f"redis://127.0.0.1:{redis_server.port}/99")
    assert p.returncode == 1, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("swsrs serve:")]
    assert len(errors) == 1 and "DB index is out of range" in errors[0], p.stderr


def test_a_redis_that_stops_answering_gets_503_not_a_hang(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    relay = start_relay(tmp_path, "--store", redis_server.url)
    assert redis_server.proc is not None
    try:
        redis_server.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            code, _, body = relay.request("POST", "/admin/sessions")
            assert code == 503 and b"timed out" in body, body
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        assert relay.request("POST", "/admin/sessions")[0] == 201
        assert "Traceback" not in relay.log()
    finally:
        relay.stop()


def test_wrong_password_exits_1(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, args=["--requirepass", "s3cret"])
    server.start()
    try:
        p = serve("--store", server.url)
        assert p.returncode == 1, p.stderr
        errors = [line for line in p.stderr.splitlines() if line.startswith("swsrs serve:")]
        assert (
            len(errors) == 1 and "authentication failed: the server wants a password" in errors[0]
        )
        assert "Traceback" not in p.stderr
        # With the password in the URL it starts; the log never shows the password.
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        relay = start_relay(tmp_path, "--store", url)
        try:
            assert relay.request("POST", "/admin/sessions")[0] == 201
            assert "s3cret" not in relay.log()
        finally:
            relay.stop()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        ("redis://127.0.0.1:99999/0", "bad port"),
        ("redis://127.0.0.1:notaport/0", "bad port"),
        ("redis://127.0.0.1:6379/zero", "bad database number"),
        ("redis://127.0.0.1:6379/0?prefix=", "prefix"),
        ("mongodb://127.0.0.1", "--store must be memory, sqlite://PATH or redis://"),
    ],
)
def test_bad_urls_exit_2(store: str, needle: str) -> None:
    p = serve("--store", store)
    assert p.returncode == 2 and needle in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_node_id_is_validated() -> None:
    p = serve("--node-id", "has space")
    assert p.returncode == 2 and "--node-id" in p.stderr


async def test_key_prefix_from_the_url(redis_server: RedisServer, tmp_path: Path) -> None:
    relay = start_relay(tmp_path, "--store", redis_server.url + "?prefix=team1:")
    try:
        s = relay.create()
        keys = redis_server.client().keys("*")
        assert f"team1:session:{s['id']}".encode() in keys
        assert not [k for k in keys if k.startswith(b"swsrs:")]
    finally:
        relay.stop()


def test_config_accepts_redis_urls_and_derives_a_node_id() -> None:
    from swsrs.server import config

    flags = {"no_auth": True, "store": "rediss://user:pw@redis.internal:6380/2?prefix=a:"}
    c1 = config.load(flags, {})
    c2 = config.load(flags, {})
    assert c1.store == flags["store"]
    assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{6}", c1.node_id) and c1.node_id != c2.node_id
    assert config.load(flags, {"SWSRS_NODE_ID": "edge-1"}).node_id == "edge-1"
    assert config.load({**flags, "node_id": "edge-2"}, {"SWSRS_NODE_ID": "x"}).node_id == "edge-2"


def test_split_url_keeps_the_password_out_of_messages() -> None:
    from swsrs.server.stores.redis import redact, split_url

    client, prefix, place = split_url("redis://:pw@h:7000/3?prefix=p:&health_check_interval=5")
    assert prefix == "p:" and place == "redis://h:7000/3" and "prefix" not in client
    assert "health_check_interval=5" in client
    assert redact("redis://u:pw@h:7000/3") == "redis://u:***@h:7000/3"


async def test_the_store_api(redis_server: RedisServer) -> None:
    """The store on its own: two instances stand for two nodes."""
    from swsrs.server.stores.base import LiveState, StoreEvent, mint
    from swsrs.server.stores.redis import RedisSessionStore

    a = await RedisSessionStore.open(redis_server.url, node="a")
    b = await RedisSessionStore.open(redis_server.url, node="b")
    events = b.events()
    try:
        first = asyncio.ensure_future(anext(events))
        await eventually(lambda: redis_server.client().pubsub_numsub("swsrs:events")[0][1] == 1)
        now = time.time()
        m1, m2 = mint(3600, now), mint(3600, now + 1)
        await a.add(m1.record)
        await a.add(m2.record)
        assert await b.get(m1.record.id) == m1.record
        assert await b.get("no-such-session") is None
        assert [r.id for r in await b.all()] == [m1.record.id, m2.record.id]
        assert (await b.get(m1.record.id)).role_for(m1.responder_token) == "responder"  # type: ignore[union-attr]

        await a.put_live("a", [LiveState(m1.record.id, "a", True, False, 5, 6, now)])
        live = await b.get_live([m1.record.id, m2.record.id])
        assert live == {m1.record.id: LiveState(m1.record.id, "a", True, False, 5, 6, now)}

        assert await a.delete(m1.record.id) is True
        assert await a.delete(m1.record.id) is False
        assert await asyncio.wait_for(first, 30) == StoreEvent(m1.record.id, "deleted", "a")
        assert await b.get_live([m1.record.id]) == {}

        # Expiry: every node's reaper may ask; exactly one gets each session.
        popped_a = await a.pop_expired(now + 7200)
        popped_b = await b.pop_expired(now + 7200)
        assert popped_a == [m2.record] and popped_b == []  # its hash was still there
        assert await asyncio.wait_for(anext(events), 30) == StoreEvent(m2.record.id, "expired", "a")
        assert await b.all() == [] and redis_server.client().keys("*") == []

        # A session whose hash Redis already expired: the reaper still gets its id.
        gone = mint(0.001).record
        await a.add(gone)
        await eventually(lambda: redis_server.client().keys("swsrs:session:*") == [])
        assert await b.get(gone.id) is None
        (popped,) = await b.pop_expired(time.time())
        assert (popped.id, popped.expires_at, popped.initiator_token_hash) == (
            gone.id,
            gone.expires_at,
            b"",
        )
    finally:
        await events.aclose()
        await a.close()
        await b.close()

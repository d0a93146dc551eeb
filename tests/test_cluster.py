"""Three relay nodes on one Redis store behind nginx (``deploy/nginx/swsrs.conf``).

Real processes throughout: ``redis-server``, three ``swsrs serve --store redis://``
and ``nginx`` routing ``/relay/{id}`` by a consistent hash of the path and
everything else round-robin.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from .cluster import NGINX, REDIS, Nginx, RedisServer, start_nginx
from .conftest import Relay, start_relay
from .test_relay import closed_with, upgrade_head

pytestmark = pytest.mark.skipif(
    not (os.path.exists(NGINX) and os.path.exists(REDIS)),
    reason="needs nginx and redis-server (installed by .ci/run)",
)


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[Relay]
    nginx: Nginx

    @property
    def front(self) -> Relay:
        """Talk to the cluster through nginx with the Relay helpers."""
        n = self.nodes[0]
        return Relay(url=self.nginx.url, port=self.nginx.port, proc=n.proc, log_path=n.log_path)

    def holder(self, sid: str) -> Relay:
        """The node whose log shows the session's peers attaching."""
        held = [n for n in self.nodes if f"attach session={sid}" in n.log()]
        assert len(held) == 1, [n.port for n in held]
        return held[0]


def start_cluster(
    tmp_path: Path,
    *,
    round_robin: bool = False,
    size: int = 3,
    flags: tuple[str, ...] = (),
    directives: dict[str, str] | None = None,
) -> Cluster:
    """``size`` relay nodes (``swsrs serve --store redis://… *flags``) behind nginx, whose
    shipped configuration gets ``directives`` (see :func:`tests.cluster.render`)."""
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    nodes = []
    try:
        for i in range(size):
            nodes.append(
                start_relay(tmp_path, "--store", redis.url, "--node-id", f"node{i}", *flags)
            )
        nginx = start_nginx(tmp_path / "nginx", [n.port for n in nodes], round_robin=round_robin,
                            directives=directives)  # fmt: skip
    except BaseException:
        for n in nodes:
            n.stop()
        redis.stop()
        raise
    return Cluster(redis, nodes, nginx)


def stop_cluster(c: Cluster) -> None:
    c.nginx.stop()
    for n in c.nodes:
        n.stop()
    c.redis.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path)
    yield c
    stop_cluster(c)


async def ws(c: Cluster, sid: str, token: str) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{c.nginx.port}/relay/{sid}?token={token}", max_size=None)


async def test_sessions_minted_anywhere_pair_through_nginx(cluster: Cluster) -> None:
    front = cluster.front
    sessions = [front.create() for _ in range(9)]  # round-robin: every node mints some
    minted_by = {n.port for n in cluster.nodes for s in sessions if s["id"] in n.log()}
    assert len(minted_by) == 3
    for s in sessions:
        a = await ws(cluster, s["id"], s["initiator_token"])
        b = await ws(cluster, s["id"], s["responder_token"])
        payload = os.urandom(100_000)
        await a.send(payload)
        assert await b.recv() == payload
        await b.send("and back")
        assert await a.recv() == "and back"
        cluster.holder(s["id"])  # both peers met on exactly one node
        # Any node, through nginx, sees the live state once the holder has flushed it.
        n = len(payload)
        st = front.wait_status(s["id"], lambda st, n=n: st and st["bytes_in"] == n)
        assert st and st["state"] == "open" and st["bytes_out"] == len("and back")
        await a.close()
        await closed_with(b)


async def test_delete_on_any_node_closes_the_peers(cluster: Cluster) -> None:
    s = cluster.front.create()
    a = await ws(cluster, s["id"], s["initiator_token"])
    b = await ws(cluster, s["id"], s["responder_token"])
    holder = cluster.holder(s["id"])
    other = next(n for n in cluster.nodes if n is not holder)
    assert other.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert (await closed_with(a))[0] == 1000
    assert (await closed_with(b))[0] == 1000
    for n in cluster.nodes:
        assert n.status(s["id"]) is None


async def kill_holder_then_reattach(c: Cluster) -> None:
    """Kill -9 the node holding a paired session; the same tokens re-attach through nginx."""
    s = c.front.create()
    a = await ws(c, s["id"], s["initiator_token"])
    b = await ws(c, s["id"], s["responder_token"])
    await a.send(b"before")
    assert await b.recv() == b"before"
    holder = c.holder(s["id"])
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    for peer in (a, b):
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await peer.recv()
    deadline = time.monotonic() + 30
    while True:
        try:
            a = await ws(c, s["id"], s["initiator_token"])
            b = await ws(c, s["id"], s["responder_token"])
            break
        except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    await a.send(b"after")
    assert await asyncio.wait_for(b.recv(), 15) == b"after"
    await a.close()
    await closed_with(b)


async def test_a_killed_node_loses_no_session(cluster: Cluster) -> None:
    """nginx hashes the session to the next node, which finds it in Redis."""
    await kill_holder_then_reattach(cluster)


@pytest.fixture
def rr_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path, round_robin=True)
    yield c
    stop_cluster(c)


async def test_a_round_robin_balancer_works_through_the_splice(rr_cluster: Cluster) -> None:
    """nginx without the hash sends the two peers to different nodes: they still meet."""
    c = rr_cluster
    for _ in range(3):
        s = c.front.create()
        a = await ws(c, s["id"], s["initiator_token"])
        b = await ws(c, s["id"], s["responder_token"])
        blob = os.urandom(3 * 1024 * 1024)
        await asyncio.gather(a.send(blob), b.send("small"))
        assert await b.recv() == blob
        assert await a.recv() == "small"
        st = c.front.wait_status(s["id"], lambda st: st and st["bytes_in"] == 3 * 1024 * 1024)
        assert st and st["state"] == "open"
        await a.close()
        assert await closed_with(b) == (1000, "peer disconnected")
    spliced = [n for n in c.nodes if "splice session=" in n.log()]
    assert spliced, "round-robin never sent two peers of a session to different nodes"


async def test_a_killed_holder_is_replaced_behind_round_robin(rr_cluster: Cluster) -> None:
    """The first node a peer reaches takes the dead holder's claim; the other peer is spliced."""
    await kill_holder_then_reattach(rr_cluster)


async def test_keepalive_upgrade_on_a_non_holder_asks_for_a_new_connection(
    cluster: Cluster,
) -> None:
    """aiohttp owns a reused connection, so it cannot be spliced: 503, and a fresh one works."""
    one, two = cluster.nodes[0], cluster.nodes[1]
    s = one.create()
    a = await connect(f"{one.ws_url}/relay/{s['id']}?token={s['initiator_token']}")
    r, w = await asyncio.open_connection("127.0.0.1", two.port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 200 " in await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    await r.readexactly(2)
    w.write(upgrade_head(s["id"], s["responder_token"]))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert b" 503 " in head.split(b"\r\n")[0], head
    w.close()
    b = await connect(f"{two.ws_url}/relay/{s['id']}?token={s['responder_token']}")
    await a.send(b"spliced")
    assert await b.recv() == b"spliced"
    await a.close()
    await closed_with(b)


async def test_a_node_that_lost_its_claim_lets_its_peers_go(cluster: Cluster) -> None:
    """Another node took the session over (this one was cut off): its peers here are closed
    so that they re-attach where the session is held now."""
    s = cluster.front.create()
    a = await ws(cluster, s["id"], s["initiator_token"])
    b = await ws(cluster, s["id"], s["responder_token"])
    cluster.redis.client().set(f"swsrs:owner:{s['id']}", "127.0.0.1:9", px=10_000)
    assert await closed_with(a) == (1001, "session moved to another relay node")
    assert await closed_with(b) == (1001, "session moved to another relay node")

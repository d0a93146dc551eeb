"""``swsrs serve --workers 2``: a front process and two data-plane workers, tested from outside."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import psutil
import pytest
import websockets

from .conftest import Relay
from .test_relay import attach, closed_with, masked, pair, read_frame, upgrade_head


@pytest.fixture
def workers(relay_factory: Any) -> Relay:
    r: Relay = relay_factory("--workers", "2")
    return r


def worker_pids(relay: Relay) -> list[int]:
    return [p.pid for p in psutil.Process(relay.proc.pid).children()]


async def test_many_sessions_pair_and_forward_across_workers(workers: Relay) -> None:
    assert len(worker_pids(workers)) == 2
    pairs = [await pair(workers) for _ in range(12)]  # crc32 spreads them over both workers
    for i, (_s, a, b) in enumerate(pairs):
        await a.send(f"hello {i}")
        await b.send(os.urandom(1000))
    for i, (_s, a, b) in enumerate(pairs):
        assert await b.recv() == f"hello {i}"
        assert len(await a.recv()) == 1000
    for i, (s, _, _) in enumerate(pairs):
        st = workers.wait_status(s["id"], lambda st: st["bytes_out"] == 1000)
        assert st and st["state"] == "open" and st["bytes_in"] == len(f"hello {i}")
    log = workers.log()
    assert "[worker 0]" in log and "[worker 1]" in log
    for _, a, b in pairs:
        await a.close()
        assert await closed_with(b) == (1000, "peer disconnected")


async def test_slot_taken_and_reattach(workers: Relay) -> None:
    s, a, b = await pair(workers)
    with pytest.raises(websockets.InvalidStatus) as exc:
        await attach(workers, s["id"], s["initiator_token"])
    assert exc.value.response.status_code == 409
    await a.close()
    assert await closed_with(b) == (1000, "peer disconnected")
    workers.wait_status(s["id"], lambda st: st["state"] == "pending")
    a = await attach(workers, s["id"], s["initiator_token"])
    workers.wait_status(s["id"], lambda st: st["state"] == "half_open")
    await a.close()


async def test_delete_reaches_the_worker(workers: Relay) -> None:
    s, a, b = await pair(workers)
    assert workers.request("DELETE", f"/admin/sessions/{s['id']}")[0] == 204
    assert (await closed_with(a))[0] == 1000
    assert (await closed_with(b))[0] == 1000
    assert workers.status(s["id"]) is None


async def test_ttl_expiry_in_a_worker(relay_factory: Any) -> None:
    relay = relay_factory("--workers", "2", "--session-ttl", "2s", "--reap-interval", "1s")
    s, a, b = await pair(relay)
    assert await closed_with(a) == (1001, "session expired")
    assert await closed_with(b) == (1001, "session expired")
    relay.wait_status(s["id"], lambda st: st is None)


async def test_upgrade_on_a_reused_connection_is_handed_over(workers: Relay) -> None:
    s = workers.create()
    b = await attach(workers, s["id"], s["responder_token"])
    r, w = await asyncio.open_connection("127.0.0.1", workers.port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert b" 200 " in head
    await r.readexactly(2)
    w.write(upgrade_head(s["id"], s["initiator_token"]))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in head.split(b"\r\n")[0], head
    w.write(masked(True, 2, b"moved"))
    assert await b.recv() == b"moved"
    await b.send(b"back")
    assert await read_frame(r) == (2, b"back")
    w.close()
    assert await closed_with(b) == (1000, "peer disconnected")


async def test_a_crashed_worker_is_replaced(workers: Relay) -> None:
    pairs = [await pair(workers) for _ in range(6)]
    victim = worker_pids(workers)[0]
    os.kill(victim, signal.SIGKILL)
    # Peers on the dead worker lose their connection; the others carry on.
    for _, a, b in pairs:
        try:
            await a.send(b"still there?")
            assert await asyncio.wait_for(b.recv(), 5) == b"still there?"
        except (websockets.ConnectionClosed, TimeoutError):
            pass
    deadline = asyncio.get_running_loop().time() + 15
    while victim in worker_pids(workers) or len(worker_pids(workers)) != 2:
        assert asyncio.get_running_loop().time() < deadline, worker_pids(workers)
        await asyncio.sleep(0.1)
    assert "exited" in workers.log() and "restarting" in workers.log()
    for _ in range(6):  # new sessions work on whichever worker they land
        _, a, b = await pair(workers)
        await a.send(b"fresh")
        assert await b.recv() == b"fresh"
        await a.close()


async def test_shutdown_closes_peers_in_workers(workers: Relay) -> None:
    pairs = [await pair(workers) for _ in range(4)]
    pids = worker_pids(workers)
    workers.proc.send_signal(signal.SIGTERM)
    for _, a, b in pairs:
        assert (await closed_with(a))[0] == 1001
        assert (await closed_with(b))[0] == 1001
    assert await asyncio.to_thread(workers.proc.wait, 15) == 0
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_workers_flag_validation(tmp_path: Any) -> None:
    for args, needle in [
        (["--workers", "0"], "--workers"),
        (["--workers", "lots"], "--workers"),
        (["--workers", "2", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "TLS"),
    ]:
        p = subprocess.run(
            [sys.executable, "-m", "swsrs", "serve", "--no-auth", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], p.stderr

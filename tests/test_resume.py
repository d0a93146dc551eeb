"""Tunnels that survive: drops in the middle of a transfer, resumed with no byte lost.

A TCP proxy (tests/cutter.py) between the peers and a real relay resets
every connection through it again and again; the CLI ends and the SDK come
back and go on where the stream broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import swsrs
from swsrs.peer import Away, Event, Resumed

from .conftest import SWSRS, Relay, free_port, start_relay
from .cutter import cutter

MiB = 1024 * 1024


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their sha256."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def counting_sink() -> tuple[socket.socket, dict[str, Any]]:
    """A TCP target that takes one connection, reads it to EOF (counting and hashing), then
    half-closes its side too so the tunnel can end; ``got`` fills in as it goes."""
    got: dict[str, Any] = {"n": 0, "sha": ""}
    sink = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = sink.accept()
        h = hashlib.sha256()
        with conn:
            while data := conn.recv(MiB):
                h.update(data)
                got["n"] += len(data)
            conn.shutdown(socket.SHUT_WR)
        got["sha"] = h.hexdigest()

    threading.Thread(target=serve, daemon=True).start()
    return sink, got


def test_raw_both_ways_through_a_proxy_that_cuts_every_20_mib(relay: Relay, tmp_path: Path) -> None:
    s = relay.create()
    sums = {side: random_file(tmp_path / f"{side}.in", 200 * MiB) for side in ("a", "b")}
    with cutter(relay.port, 20 * MiB) as cut:
        url = f"http://127.0.0.1:{cut.port}"
        procs = {}
        for side, token, role in (("a", "initiator_token", "initiator"),
                                  ("b", "responder_token", "responder")):  # fmt: skip
            with (tmp_path / f"{side}.in").open("rb") as fin, \
                 (tmp_path / f"{side}.out").open("wb") as fout, \
                 (tmp_path / f"{side}.err").open("wb") as ferr:  # fmt: skip
                procs[side] = subprocess.Popen(
                    [*SWSRS, "raw", "--url", url, "--session", s["id"], "--token", s[token],
                     "--role", role],
                    stdin=fin, stdout=fout, stderr=ferr,
                )  # fmt: skip
        try:
            codes = {side: p.wait(180) for side, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
        cuts = cut.cuts
    errs = {side: (tmp_path / f"{side}.err").read_text() for side in procs}
    assert codes == {"a": 0, "b": 0}, errs
    assert cuts >= 15, (cuts, errs)  # 400 MiB crossed the proxy: about 20 cuts
    assert sha256_of(tmp_path / "a.out") == sums["b"]
    assert sha256_of(tmp_path / "b.out") == sums["a"]
    for side in procs:
        assert "Traceback" not in errs[side]
        assert errs[side].count("resumed: the stream goes on") >= 5, errs[side]
        assert "done: sent 200.0 MiB, received 200.0 MiB" in errs[side], errs[side]


async def test_the_sdk_reconnects_resumes_and_says_so(relay: Relay) -> None:
    s = relay.create()
    blob = os.urandom(24 * MiB)
    seen: dict[str, list[Event]] = {"a": [], "b": []}
    with cutter(relay.port, 4 * MiB) as cut:
        url = f"http://127.0.0.1:{cut.port}"
        acc = asyncio.create_task(
            swsrs.accept(url, s["id"], s["responder_token"], reconnect=30,
                         on_event=seen["b"].append)
        )  # fmt: skip
        a = await swsrs.dial(url, s["id"], s["initiator_token"], reconnect=30,
                             resume_buffer=1 * MiB, on_event=seen["a"].append)  # fmt: skip
        b = await acc

        async def push() -> None:
            for i in range(0, len(blob), 256 * 1024):
                await a.write(blob[i : i + 256 * 1024])
            await a.write_eof()

        async def pull() -> bytes:
            got = bytearray()
            while chunk := await b.read():
                got += chunk
            return bytes(got)

        _, got = await asyncio.gather(push(), pull())
        ends = await asyncio.gather(a.finish(), b.finish())
        await a.close()
        await b.close()
    assert got == blob
    assert [e.ok for e in ends] == [True, True], ends
    assert cut.cuts >= 3
    for side in ("a", "b"):
        kinds = {type(e) for e in seen[side]}
        assert Away in kinds and Resumed in kinds, seen[side]
    # The sender's replay buffer (1 MiB) was enough: it paused instead of growing.
    assert a.protocol.replay is not None and a.protocol.replay.size <= 1 * MiB + 256 * 1024


def test_a_tcp_tunnel_survives_two_relay_restarts(tmp_path: Path) -> None:
    """200 MiB through tcp-listen/tcp-dial while the relay (SQLite store) is stopped with
    SIGTERM and restarted, then killed with SIGKILL and restarted: every byte arrives, both
    ends exit 0, and they are the same processes throughout."""
    port = free_port()
    flags = ("--addr", f"127.0.0.1:{port}", "--store", f"sqlite://{tmp_path / 'sessions.db'}")
    relays = [start_relay(tmp_path, *flags)]
    total = 200 * MiB
    sink, got = counting_sink()
    try:
        s = relays[0].create()
        peer = ["--url", relays[0].url, "--session", s["id"]]
        dial = subprocess.Popen(
            [*SWSRS, "tcp-dial", *peer, "--token", s["responder_token"],
             "--target", f"127.0.0.1:{sink.getsockname()[1]}"],
            stderr=(tmp_path / "dial.err").open("wb"),
        )  # fmt: skip
        listen = subprocess.Popen(
            [*SWSRS, "tcp-listen", *peer, "--token", s["initiator_token"], "--role",
             "initiator"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listen.stderr is not None
        lport = int(listen.stderr.readline().rsplit(":", 1)[1])
        sent = hashlib.sha256()
        with socket.create_connection(("127.0.0.1", lport)) as c:
            for i in range(total // MiB):
                if i in (60, 130):  # restart the relay mid-transfer, twice
                    old = relays[-1]
                    old.stop(signal.SIGTERM if i == 60 else signal.SIGKILL)
                    relays.append(start_relay(tmp_path, *flags))
                chunk = os.urandom(MiB)
                sent.update(chunk)
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            c.settimeout(120)
            assert c.recv(1) == b""  # the sink's half-close arrived: everything is through
        assert listen.wait(60) == 0, listen.stderr.read()
        assert dial.wait(60) == 0, (tmp_path / "dial.err").read_text()
    finally:
        for p in ("dial", "listen"):
            proc = locals().get(p)
            if proc is not None and proc.poll() is None:
                proc.kill()
        for r in relays:
            if r.proc.poll() is None:
                r.stop()
        sink.close()
    assert got["n"] == total and got["sha"] == sent.hexdigest()
    err = listen.stderr.read() + (tmp_path / "dial.err").read_text()
    assert err.count("resumed: the stream goes on") >= 4, err  # two restarts, both ends
    assert "the relay is restarting; reconnecting" in err, err


def test_a_stalled_receiver_blocks_the_sender_whose_memory_stays_bounded(
    relay: Relay, tmp_path: Path
) -> None:
    import psutil

    s = relay.create()
    receiver = subprocess.Popen(
        [*SWSRS, "raw", "--url", relay.url, "--session", s["id"], "--token",
         s["responder_token"], "--quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sender = subprocess.Popen(
        [*SWSRS, "raw", "--url", relay.url, "--session", s["id"], "--token",
         s["initiator_token"], "--role", "initiator", "--quiet"],
        stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert sender.stdin is not None and receiver.stdout is not None
    written = 0
    chunk = os.urandom(MiB)

    def feed() -> None:
        nonlocal written
        with contextlib.suppress(OSError):
            for _ in range(300):
                sender.stdin.write(chunk)  # type: ignore[union-attr]
                written += MiB

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        rss: list[int] = []
        for _ in range(30):  # nobody reads the receiver's stdout for 3 s
            time.sleep(0.1)
            rss.append(psutil.Process(sender.pid).memory_info().rss)
        stalled_at = written
        print(f"sender stalled after {stalled_at // MiB} MiB, RSS at most {max(rss) // MiB} MiB")
        assert stalled_at < 100 * MiB, stalled_at  # the sender stopped taking input
        assert max(rss) < 120 * MiB, max(rss)  # and holds a bounded amount
        h = hashlib.sha256()
        got = 0
        while got < 300 * MiB:  # now read: everything arrives, intact
            data = receiver.stdout.read(MiB)
            assert data
            h.update(data)
            got += len(data)
        t.join(30)
        sender.stdin.close()
        assert h.hexdigest() == hashlib.sha256(chunk * 300).hexdigest()
        assert sender.wait(30) == 0 and receiver.wait(30) == 0
    finally:
        for p in (sender, receiver):
            if p.poll() is None:
                p.kill()


def test_a_crashed_worker_costs_its_peers_one_reconnect(relay_factory: Any, tmp_path: Path) -> None:
    """With --workers 2, SIGKILL to every worker mid-transfer: the front starts new ones and
    the peers resume there; 64 MiB arrive intact and both ends exit 0."""
    import psutil

    relay: Relay = relay_factory("--workers", "2")
    total = 64 * MiB
    sink, got = counting_sink()
    s = relay.create()
    peer = ["--url", relay.url, "--session", s["id"]]
    dial = subprocess.Popen(
        [*SWSRS, "tcp-dial", *peer, "--token", s["responder_token"],
         "--target", f"127.0.0.1:{sink.getsockname()[1]}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listen = subprocess.Popen(
        [*SWSRS, "tcp-listen", *peer, "--token", s["initiator_token"], "--role", "initiator"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert listen.stderr is not None
        lport = int(listen.stderr.readline().rsplit(":", 1)[1])
        sent = hashlib.sha256()
        with socket.create_connection(("127.0.0.1", lport)) as c:
            for i in range(total // MiB):
                if i == 24:
                    for child in psutil.Process(relay.proc.pid).children():
                        child.kill()  # every worker: the one holding the session among them
                chunk = os.urandom(MiB)
                sent.update(chunk)
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            c.settimeout(60)
            assert c.recv(1) == b""
        _, lerr = listen.communicate(timeout=60)
        _, derr = dial.communicate(timeout=60)
        assert listen.returncode == 0 and dial.returncode == 0, (lerr, derr)
    finally:
        for p in (dial, listen):
            if p.poll() is None:
                p.kill()
        sink.close()
    assert got["n"] == total and got["sha"] == sent.hexdigest()
    assert "resumed: the stream goes on" in lerr and "resumed: the stream goes on" in derr

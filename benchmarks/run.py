"""Relay benchmarks: one command, a table of results.

    python benchmarks/run.py            # full: 1 GiB transfers, 3 interleaved rounds
    python benchmarks/run.py --quick    # 128 MiB transfers, 1 round (about a minute)

Every subject runs as its own process; its CPU (user+sys, from /proc via
psutil) is read before and after each transfer, so "relay CPU per unit" is
the relay's own work. The load generator sends prebuilt masked frames and
counts raw bytes on the receiving side, so it does no per-byte work in
Python; its CPU is reported too. Results are medians with min–max of the
rounds, and ratios against references measured in the same invocation:

- ``swsrs``: ``swsrs serve --no-auth`` (this project)
- ``naive``: a textbook aiohttp receive/send relay (``benchmarks/naive_relay.py``)
- ``socat``: socat TCP↔TCP, no framing at all (bulk only)
- ``direct``: sender straight to receiver over TCP, no relay (wall-clock reference)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from swsrs.wire.frames import OP_BINARY, apply_mask, frame_header  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args} did not start") from None
            time.sleep(0.05)


@dataclass
class Subject:
    """A process that moves the bytes (a relay, socat) and how to reach it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    websocket: bool
    create: Callable[[], tuple[str, str, str]] | None = None

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_swsrs() -> Subject:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swsrs", "serve", "--no-auth", "--addr", f"127.0.0.1:{port}",
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc)

    def create() -> tuple[str, str, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/sessions", method="POST")
        with urllib.request.urlopen(req) as r:
            s = json.load(r)
        return s["id"], s["initiator_token"], s["responder_token"]

    return Subject("swsrs", proc, port, True, create)


def start_naive() -> Subject:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "naive_relay.py"), str(port)])
    wait_port(port, proc)
    counter = iter(range(10**9))
    return Subject("naive", proc, port, True, lambda: (f"s{next(counter)}", "x", "x"))


def ws_open(port: int, sid: str, token: str) -> tuple[socket.socket, bytes]:
    """A raw WebSocket client handshake; returns the socket and any bytes read past the head."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /relay/{sid}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("handshake: connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:80]!r}")
    return s, rest


def masked_batch(msg_size: int, count: int) -> bytes:
    mask = os.urandom(4)
    payload = os.urandom(msg_size)
    frame = frame_header(True, OP_BINARY, msg_size, mask) + apply_mask(payload, mask)
    return frame * count


def transfer(
    sender: socket.socket,
    receiver: socket.socket,
    pre: bytes,
    batch: bytes,
    batches: int,
    expect: int,
) -> float:
    """Send ``batches`` copies of ``batch``; return wall seconds until ``expect`` bytes arrived."""
    got = len(pre)
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    t0 = time.perf_counter()

    def send() -> None:
        for _ in range(batches):
            sender.sendall(batch)

    th = threading.Thread(target=send)
    th.start()
    while got < expect:
        n = receiver.recv_into(view)
        if not n:
            raise RuntimeError(f"receiver closed after {got} of {expect} bytes")
        got += n
    dt = time.perf_counter() - t0
    th.join()
    return dt


def server_frame_len(msg_size: int) -> int:
    return len(frame_header(True, OP_BINARY, msg_size)) + msg_size


@dataclass
class Result:
    wall: float
    subject_cpu: float
    client_cpu: float


def run_ws(subject: Subject, msg_size: int, total: int) -> Result:
    assert subject.create is not None
    sid, ti, tr = subject.create()
    a, _ = ws_open(subject.port, sid, ti)
    b, pre = ws_open(subject.port, sid, tr)
    per_batch = max(1, MiB // (msg_size + 14))
    count = total // msg_size
    batches = max(1, count // per_batch)
    count = batches * per_batch
    batch = masked_batch(msg_size, per_batch)
    me = psutil.Process()
    c0, m0 = subject.cpu(), sum(me.cpu_times()[:2])
    wall = transfer(a, b, pre, batch, batches=batches, expect=count * server_frame_len(msg_size))
    c1, m1 = subject.cpu(), sum(me.cpu_times()[:2])
    a.close()
    b.close()
    return Result(wall, c1 - c0, m1 - m0)


def run_tcp(
    port_in: int, port_out_listener: socket.socket, subject: Subject | None, total: int
) -> Result:
    deadline = time.monotonic() + 10
    while True:  # socat may still be starting; it serves exactly one connection
        try:
            a = socket.create_connection(("127.0.0.1", port_in))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    b, _ = port_out_listener.accept()
    batch = os.urandom(MiB)
    batches = total // MiB
    me = psutil.Process()
    c0 = subject.cpu() if subject else 0.0
    m0 = sum(me.cpu_times()[:2])
    wall = transfer(a, b, b"", batch, batches=batches, expect=batches * MiB)
    c1 = subject.cpu() if subject else 0.0
    m1 = sum(me.cpu_times()[:2])
    a.close()
    b.close()
    return Result(wall, c1 - c0, m1 - m0)


def fmt(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = [x * scale for x in values]
    med = statistics.median(v)
    if len(v) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small transfers, one round")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    bulk = 128 * MiB if args.quick else GiB
    small_count = 50_000 if args.quick else 200_000

    subjects = [start_swsrs(), start_naive()]
    socat = shutil.which("socat")
    rows: dict[str, list[Result]] = {}
    try:
        for _ in range(rounds):
            for s in subjects:
                for size, label in (
                    (64 * 1024, "W1 bulk 64 KiB msgs"),
                    (MiB, "W1 bulk 1 MiB msgs"),
                ):
                    rows.setdefault(f"{label}|{s.name}", []).append(run_ws(s, size, bulk))
                rows.setdefault(f"W2 64 B msgs|{s.name}", []).append(
                    run_ws(s, 64, small_count * 64)
                )
            # TCP references: direct, and through socat.
            lst = socket.create_server(("127.0.0.1", 0))
            out_port = lst.getsockname()[1]
            rows.setdefault("W1 bulk raw TCP|direct", []).append(run_tcp(out_port, lst, None, bulk))
            if socat:
                in_port = free_port()
                proc = subprocess.Popen(
                    [socat, "-b", str(256 * 1024), f"TCP-LISTEN:{in_port},bind=127.0.0.1,reuseaddr",
                     f"TCP:127.0.0.1:{out_port}"]
                )  # fmt: skip
                subj = Subject("socat", proc, in_port, False)
                rows.setdefault("W1 bulk raw TCP|socat", []).append(
                    run_tcp(in_port, lst, subj, bulk)
                )
                subj.stop()
            lst.close()
    finally:
        for s in subjects:
            s.stop()

    print(f"\nrounds={rounds} bulk={bulk // MiB} MiB small={small_count} msgs  (median, min–max)\n")
    print(f"{'workload':<24} {'subject':<8} {'MB/s':>22} {'subject CPU':>26} {'client CPU':>20}")
    for key, res in rows.items():
        label, name = key.split("|")
        small = label.startswith("W2")
        total = small_count if small else bulk
        mbps = fmt([total * (64 if small else 1) / r.wall / 1e6 for r in res], digits=0)
        if small:
            cpu = fmt([r.subject_cpu / total * 1e6 for r in res]) + " µs/msg"
        else:
            cpu = fmt([r.subject_cpu / (total / GiB) for r in res]) + " s/GiB"
        client = fmt([r.client_cpu for r in res]) + " s"
        print(f"{label:<24} {name:<8} {mbps:>22} {cpu:>26} {client:>20}")


if __name__ == "__main__":
    main()

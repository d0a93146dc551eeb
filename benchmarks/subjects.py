"""What the benchmarks measure: relays and references, each its own process (or none).

A :class:`Subject` opens a :class:`~loadgen.Link` (two connected client
endpoints) through itself and reports the CPU (user+sys) and memory of the
processes that moved the bytes, read from /proc via psutil. Every process
started here is stopped by its PID in ``stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from loadgen import Link, connect, hard_close, ws_open

HERE = Path(__file__).resolve().parent

PeerPath = tuple[str, str | None, str | None]  # /relay/{id}, token A, token B

# How to run swsrs; ``--swsrs`` on the command line replaces it (another tree's venv).
SWSRS_CMD: list[str] = [sys.executable, "-m", "swsrs"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited ({proc.returncode})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args} did not start") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate one process we started, by its PID; kill it if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def process_cpu(pid: int) -> float:
    """On-CPU seconds (user+sys) of one process's live threads, to the nanosecond.

    ``/proc/PID/task/*/schedstat`` counts in ns where ``/proc/PID/stat`` (and
    psutil) count in 10 ms ticks, too coarse for sub-second runs.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread just ended
    if total:
        return total / 1e9
    with contextlib.suppress(psutil.NoSuchProcess):  # no schedstat: ticks
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


def tree_cpu(pid: int) -> float:
    """User+sys seconds of a process and its live children (workers)."""
    pids = [pid]
    with contextlib.suppress(psutil.NoSuchProcess):
        pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return sum(process_cpu(p) for p in pids)


def tree_memory(pid: int, uss: bool = True) -> tuple[int, int]:
    """RSS and USS (0 when unavailable) summed over a process and its children."""
    p = psutil.Process(pid)
    rss = uss_total = 0
    for q in [p, *p.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            if uss:
                m = q.memory_full_info()
                rss += m.rss
                uss_total += m.uss
            else:
                rss += q.memory_info().rss
    return rss, uss_total


def self_cpu() -> float:
    """User+sys seconds of this process (the load generator), ended threads included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Subject:
    """A path between two client endpoints, and the CPU spent on it."""

    name = "?"
    kind = "raw"  # what the receiving endpoint sees: "server", "masked" or "raw"

    def open_link(self) -> Link:
        raise NotImplementedError

    def cpu(self) -> float:
        """CPU seconds of the process(es) in the path so far (0 when there are none)."""
        return 0.0

    def stop(self) -> None:
        pass


class Relay(Subject):
    """A relay process: ``swsrs serve`` or the naive aiohttp relay."""

    kind = "server"

    def __init__(self, name: str, argv: list[str], port: int, sessions: bool) -> None:
        self.name = name
        self.port = port
        self.sessions = sessions  # an admin API (swsrs) or pairing by path (naive)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **NO_PER_ADDRESS_LIMITS},
        )
        self._naive_ids = iter(range(1 << 62))
        try:
            wait_port(port, self.proc)
        except BaseException:
            stop_process(self.proc)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def create(self) -> tuple[str, str | None, str | None]:
        """A fresh (path, token A, token B)."""
        if not self.sessions:
            return f"/relay/n{next(self._naive_ids)}", None, None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/sessions", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            s = json.load(r)
        return f"/relay/{s['id']}", s["initiator_token"], s["responder_token"]

    def paths(
        self, sessions: list[tuple[str, str, str]]
    ) -> list[tuple[str, str | None, str | None]]:
        return [(f"/relay/{sid}", ta, tb) for sid, ta, tb in sessions]

    def naive_paths(self, n: int) -> list[PeerPath]:
        return [(f"/relay/n{next(self._naive_ids)}", None, None) for _ in range(n)]

    def open_link(self) -> Link:
        path, ta, tb = self.create()
        a, pre_a = ws_open(self.port, path, ta)
        try:
            b, pre_b = ws_open(self.port, path, tb)
        except BaseException:
            hard_close(a)
            raise
        return Link(a, b, "server", pre_a, pre_b)

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)

    def memory(self, uss: bool = True) -> tuple[int, int]:
        return tree_memory(self.proc.pid, uss)

    def stop(self) -> None:
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(self.proc.pid).children(recursive=True)
        stop_process(self.proc)
        # Workers should exit with their parent; any that did not are stopped by PID.
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.terminate()
        _, alive = psutil.wait_procs(children, timeout=5)
        for c in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()


# All load comes from 127.0.0.1, so swsrs's per-address limits (attaches per second, failed
# attaches) would measure themselves: off, by environment, which relays without them ignore.
NO_PER_ADDRESS_LIMITS = {"SWSRS_ATTACH_RATE": "0", "SWSRS_FAILED_ATTACH_LIMIT": "0"}


def swsrs_argv(
    port: int, workers: int | None = None, store: str | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    argv = [
        *SWSRS_CMD,
        "serve",
        "--no-auth",
        "--addr",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if store is not None:
        argv += ["--store", store]
    return argv + list(extra)


def start_swsrs(
    workers: int | None = None,
    store: str | None = None,
    name: str = "",
    extra: tuple[str, ...] = (),
) -> Relay:
    port = free_port()
    name = name or ("swsrs" if workers is None else f"swsrs --workers {workers}")
    return Relay(name, swsrs_argv(port, workers, store, extra), port, sessions=True)


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 (no persistence) for the store rows."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server") or "/usr/sbin/redis-server"
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="swsrs-bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, self.proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class SplicePair(Subject):
    """Two swsrs nodes on one Redis; peer A attaches to node 1, peer B to node 2, so node 2
    splices B to node 1 (the path a round-robin balancer gives half the peers)."""

    kind = "server"

    def __init__(self, redis_url: str) -> None:
        self.name = "swsrs splice"
        self.one = start_swsrs(store=redis_url, name="splice node 1")
        try:
            self.two = start_swsrs(store=redis_url, name="splice node 2")
        except BaseException:
            self.one.stop()
            raise

    def open_link(self) -> Link:
        path, ta, tb = self.one.create()
        a, pre_a = ws_open(self.one.port, path, ta)
        try:
            b, pre_b = ws_open(self.two.port, path, tb)
        except BaseException:
            hard_close(a)
            raise
        return Link(a, b, "server", pre_a, pre_b)

    def cpu(self) -> float:
        return self.one.cpu() + self.two.cpu()

    def stop(self) -> None:
        self.one.stop()
        self.two.stop()


def start_naive() -> Relay:
    port = free_port()
    return Relay("naive", [sys.executable, str(HERE / "naive_relay.py"), str(port)], port, False)


def swsrs_has_workers() -> bool:
    """Whether ``swsrs serve`` has the ``--workers`` flag (multi-core serving)."""
    out = subprocess.run(
        [*SWSRS_CMD, "serve", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    return "--workers" in out


class Direct(Subject):
    """No relay: the sender's socket is connected straight to the receiver's."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = "direct WS" if kind == "masked" else "direct TCP"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def open_link(self) -> Link:
        a = connect(self.port)
        self.listener.settimeout(30)
        b, _ = self.listener.accept()
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        b.settimeout(60)
        return Link(a, b, self.kind)

    def stop(self) -> None:
        self.listener.close()


class Socat(Subject):
    """socat TCP↔TCP, one process per link: bytes moved with no framing at all."""

    name = "socat"
    kind = "raw"

    def __init__(self) -> None:
        exe = shutil.which("socat")
        if exe is None:
            raise RuntimeError("socat not installed")
        self.exe = exe
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.out_port = self.listener.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def open_link(self) -> Link:
        port = free_port()
        proc = subprocess.Popen(
            [
                self.exe,
                "-b",
                str(256 * 1024),
                f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                f"TCP:127.0.0.1:{self.out_port}",
            ],
            stdin=subprocess.DEVNULL,
        )
        self.proc = proc
        try:
            deadline = time.monotonic() + 10
            while True:  # socat serves exactly one connection; wait for its listen socket
                try:
                    a = connect(port)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("socat did not start") from None
                    time.sleep(0.02)
            self.listener.settimeout(30)
            b, _ = self.listener.accept()
            b.settimeout(60)
        except BaseException:
            stop_process(proc)
            raise
        return Link(a, b, "raw", on_close=lambda: stop_process(proc))

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.listener.close()


# -- W5: the CLI tunnel ------------------------------------------------------------------------


class Tunnel:
    """``swsrs tcp-dial`` and ``swsrs tcp-listen`` as real processes around one session."""

    def __init__(self, relay: Relay, sink_port: int, extra: tuple[str, ...] = ()) -> None:
        path, ti, tr = relay.create()
        sid = path.rsplit("/", 1)[1]
        url = f"http://127.0.0.1:{relay.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dial_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        # Always --flag=value: a base64url token or id may start with "-", which
        # argparse takes for an option in "--token -x…" (see README, known issues).
        dial = [f"--url={url}", f"--session={sid}", f"--token={tr}", "--role=responder",
                f"--target=127.0.0.1:{sink_port}", *extra]  # fmt: skip
        self.dial = subprocess.Popen(
            [*SWSRS_CMD, "tcp-dial", *dial],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.dial_log,
        )
        self.procs.append(self.dial)
        listen = [f"--url={url}", f"--session={sid}", f"--token={ti}", "--role=initiator",
                  "--listen=127.0.0.1:0", *extra]  # fmt: skip
        self._argv_listen = [*SWSRS_CMD, "tcp-listen", *listen]
        self.listen: subprocess.Popen[bytes] | None = None

    def dial_status(self) -> str:
        """How tcp-dial is doing, for error messages: exit status and the end of its stderr."""
        self.dial_log.seek(0)
        err = self.dial_log.read()[-300:].decode(errors="replace").strip()
        state = "running" if self.dial.poll() is None else f"exited {self.dial.returncode}"
        return f"tcp-dial {state}: {err!r}"

    def start_listen(self) -> int:
        """Start tcp-listen; return the port it bound (read from its stderr)."""
        self.listen = subprocess.Popen(
            self._argv_listen,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(self.listen)
        assert self.listen.stderr is not None
        fd = self.listen.stderr.fileno()
        line = b""
        deadline = time.monotonic() + 20
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"tcp-listen did not report its address: {line!r}")
            ch = os.read(fd, 1)
            if not ch:
                raise RuntimeError(f"tcp-listen exited: {line!r}")
            line += ch
        m = re.search(rb":(\d+)\s*$", line.strip())
        if m is None:
            raise RuntimeError(f"tcp-listen printed {line!r}")
        return int(m.group(1))

    def stop(self) -> None:
        for p in self.procs:
            stop_process(p, timeout=5)
            if p.stderr is not None:
                p.stderr.close()
        self.dial_log.close()

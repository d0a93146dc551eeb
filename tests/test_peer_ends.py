"""Every way a peer command (``raw``, ``tcp-listen``, ``tcp-dial``) can end, through the real CLI.

Exit 0 only when every byte was delivered both ways and the end was clean;
exit 1 with one line ``swsrs <cmd>: <cause>`` (the last on stderr, after any
status lines) for every other end; exit 2 for a usage error before anything
connects. Real ``swsrs`` processes, a real relay (``swsrs serve`` from
conftest, or the Go reference's), real sockets on 127.0.0.1; no mocks.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from .conftest import SWSRS, Relay, free_port

GO = Path(__file__).resolve().parents[2] / "shared" / "reference" / "swsrs-go"
MiB = 1024 * 1024
PAIR_KINDS = ["raw", "tcp"]  # raw↔raw, tcp-listen↔tcp-dial


# -- processes ---------------------------------------------------------------------------


@dataclass
class Proc:
    """One process with its stderr in a file (read it at any time, no pipe to drain)."""

    cmd: str  # the subcommand: the error line starts with "swsrs <cmd>: "
    popen: subprocess.Popen[bytes]
    err_path: Path
    started: float = field(default_factory=time.monotonic)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.cmd} still running after {timeout}s; stderr:\n{self.stderr()}"
            ) from None

    def wait_line(self, start: str, timeout: float = 15) -> str:
        """The first stderr line starting with ``start``, once it is there."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr().splitlines():
                if line.startswith(start):
                    return line
            if not self.running():
                raise AssertionError(f"{self.cmd} exited without {start!r}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {start!r} from {self.cmd} in {timeout}s:\n{self.stderr()}"
                )
            time.sleep(0.02)

    def listen_port(self) -> int:
        """tcp-listen's bound port, from its "listening on 127.0.0.1:PORT" line."""
        return int(self.wait_line("listening on ").rsplit(":", 1)[1])


class Target:
    """A TCP server on 127.0.0.1 that counts the connections it accepts and hands each to
    ``handle`` in a thread of its own."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._handle = handle
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


class Spawner:
    """Starts processes, sockets and servers for one test; all are ended at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: list[Proc] = []
        self.closers: list[Callable[[], None]] = []
        self._n = 0

    def start(
        self,
        argv: list[str],
        cmd: str,
        *,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> Proc:
        self._n += 1
        err_path = self.tmp / f"{self._n:02d}-{cmd}.stderr"
        with err_path.open("wb") as err:
            popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err, bufsize=0)
        proc = Proc(cmd, popen, err_path)
        self.procs.append(proc)
        return proc

    def peer(
        self,
        cmd: str,
        url: str,
        session: str,
        token: str,
        *extra: str,
        role: str = "responder",
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> Proc:
        return self.start(
            peer_argv(cmd, url, session, token, *extra, role=role), cmd, stdin=stdin, stdout=stdout
        )

    def target(self, handle: Callable[[socket.socket], None]) -> Target:
        t = Target(handle)
        self.closers.append(t.close)
        return t

    def connect(self, port: int) -> socket.socket:
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.closers.append(c.close)
        return c

    def close(self) -> None:
        for p in self.procs:
            if p.running():
                p.popen.kill()
            p.popen.wait()
            for stream in (p.popen.stdin, p.popen.stdout):
                if stream is not None:
                    stream.close()
        for close in self.closers:
            close()


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[Spawner]:
    s = Spawner(tmp_path)
    yield s
    s.close()


def peer_argv(cmd: str, url: str, session: str, token: str, *extra: str, role: str) -> list[str]:
    return [*SWSRS, cmd, "--url", url, "--session", session, "--token", token,
            "--role", role, *extra]  # fmt: skip


# -- what a peer says --------------------------------------------------------------------


def error_line(p: Proc, *causes: str, code: int = 1) -> str:
    """``p`` exited ``code`` with its one error line last on stderr, containing ``causes``."""
    err = p.stderr()
    assert p.popen.returncode == code, f"{p.cmd} exited {p.popen.returncode}:\n{err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    prefix = f"swsrs {p.cmd}: "
    assert lines and lines[-1].startswith(prefix), f"last line is not {prefix!r}…:\n{err}"
    assert [ln for ln in lines if ln.startswith("swsrs ")] == lines[-1:], f"not ONE error:\n{err}"
    for cause in causes:
        assert cause in lines[-1], f"{cause!r} not in {lines[-1]!r}"
    return lines[-1]


def succeeded(p: Proc) -> str:
    """``p`` exited 0 and its last stderr line is the "done:" summary."""
    err = p.stderr()
    assert p.popen.returncode == 0, f"{p.cmd} exited {p.popen.returncode}:\n{err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("done"), err
    assert not [ln for ln in lines if ln.startswith("swsrs ")], err
    return lines[-1]


# -- data that keeps flowing ---------------------------------------------------------------


def trickle(write: Callable[[bytes], object]) -> None:
    """Write 64 KiB every 10 ms until the other end goes away (about 6 MiB/s)."""

    def run() -> None:
        chunk = os.urandom(64 * 1024)
        try:
            while True:
                write(chunk)
                time.sleep(0.01)
        except (OSError, ValueError):
            return

    threading.Thread(target=run, daemon=True).start()


def drain(read: Callable[[int], bytes]) -> None:
    def run() -> None:
        try:
            while read(1 << 16):
                pass
        except (OSError, ValueError):
            return

    threading.Thread(target=run, daemon=True).start()


def chatter(sock: socket.socket) -> None:
    """Both directions busy on ``sock``: send a trickle, read everything."""
    trickle(sock.sendall)
    drain(sock.recv)


def start_streaming_pair(
    sp: Spawner, relay: Relay, kind: str, *extra: str
) -> tuple[str, Proc, Proc]:
    """A session with bytes flowing both ways between two peers: raw↔raw (stdin trickles,
    stdout to /dev/null) or tcp-dial↔tcp-listen (a chatty target and a chatty client)."""
    s = relay.create()
    sid = s["id"]
    if kind == "raw":
        a = sp.peer("raw", relay.url, sid, s["responder_token"], *extra, stdin=subprocess.PIPE)
        b = sp.peer("raw", relay.url, sid, s["initiator_token"], *extra, role="initiator",
                    stdin=subprocess.PIPE)  # fmt: skip
        for p in (a, b):
            assert p.popen.stdin is not None
            trickle(p.popen.stdin.write)
    else:
        target = sp.target(chatter)
        a = sp.peer("tcp-dial", relay.url, sid, s["responder_token"],
                    "--target", f"127.0.0.1:{target.port}", *extra)  # fmt: skip
        b = sp.peer("tcp-listen", relay.url, sid, s["initiator_token"], *extra, role="initiator")
        chatter(sp.connect(b.listen_port()))
    relay.wait_status(
        sid, lambda st: st is not None and st["bytes_in"] > 0 and st["bytes_out"] > 0, timeout=10
    )
    return sid, a, b


# -- 1. every end, from both commands ------------------------------------------------------


@pytest.mark.parametrize("kind", PAIR_KINDS)
@pytest.mark.parametrize("end", ["deleted", "expired", "shutting down"])
def test_the_relay_ending_a_live_tunnel_is_one_line_on_both_sides(
    sp: Spawner, relay_factory: Any, end: str, kind: str
) -> None:
    relay: Relay = relay_factory(*(["--session-ttl", "4s"] if end == "expired" else []))
    # Without --reconnect 0 a relay shutting down is a drop to come back from (below).
    sid, a, b = start_streaming_pair(sp, relay, kind, "--reconnect", "0")
    if end == "deleted":
        status, _, body = relay.request("DELETE", f"/admin/sessions/{sid}")
        assert status == 204, body
        words = "the session was deleted"
    elif end == "shutting down":
        relay.proc.send_signal(signal.SIGTERM)
        words = "the relay is shutting down"
    else:
        words = "the session expired"
    for p in (a, b):
        p.wait(15)
        error_line(p, words)


@pytest.mark.parametrize("cmd", ["raw", "tcp-dial", "tcp-listen"])
def test_nobody_came_within_the_peer_wait(sp: Spawner, relay_factory: Any, cmd: str) -> None:
    relay: Relay = relay_factory("--peer-wait", "2s")
    s = relay.create()
    extra = ["--target", f"127.0.0.1:{free_port()}"] if cmd == "tcp-dial" else []
    p = sp.peer(cmd, relay.url, s["id"], s["responder_token"], *extra, stdin=subprocess.PIPE)
    if cmd == "tcp-listen":
        sp.connect(p.listen_port())  # tcp-listen attaches once a client is there
    relay.wait_status(s["id"], lambda st: st["responder_connected"], timeout=10)
    attached = time.monotonic()
    p.wait(10)
    waited = time.monotonic() - attached
    error_line(p, "nobody came", "2s")
    assert waited < 5, f"{cmd} took {waited:.1f}s to give up after a 2s peer-wait"
    assert "waiting for the other side of session" in p.stderr()


def _refused(sp: Spawner, cmd: str, url: str, session: str, token: str) -> Proc:
    """Run ``cmd`` once against ``url`` (for tcp-listen, with a client that makes it attach)."""
    extra = ["--target", f"127.0.0.1:{free_port()}"] if cmd == "tcp-dial" else []
    p = sp.peer(cmd, url, session, token, *extra, stdin=subprocess.PIPE)
    if cmd == "tcp-listen":
        sp.connect(p.listen_port())
    p.wait(20)
    return p


@pytest.mark.parametrize("cmd", ["raw", "tcp-dial", "tcp-listen"])
@pytest.mark.parametrize("why", ["unreachable", "token", "not found", "already held"])
def test_refused_attaches_are_one_line(sp: Spawner, relay: Relay, cmd: str, why: str) -> None:
    s = relay.create()
    sid, token = s["id"], s["responder_token"]
    url = relay.url
    if why == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    elif why == "token":
        token = "A" * 22
    elif why == "not found":
        sid = "no-such-session"
    else:  # another connection holds the responder slot
        sp.peer("raw", relay.url, sid, token, stdin=subprocess.PIPE)
        relay.wait_status(sid, lambda st: st["responder_connected"], timeout=10)
    p = _refused(sp, cmd, url, sid, token)
    line = error_line(p, {"unreachable": "connection refused"}.get(why, why))
    if why == "unreachable":
        assert "ssl:default" not in line and "Connect call failed" not in line, line
    elif why == "token":
        assert "401" in line, line
    elif why == "not found":
        assert "404" in line, line
    else:
        assert "409" in line, line
        assert relay.status(sid)["responder_connected"]  # type: ignore[index]  # still the holder's


@pytest.mark.parametrize("other", ["tcp-listen", "raw"])
def test_unreachable_target_fails_both_sides_naming_it(
    sp: Spawner, relay: Relay, other: str
) -> None:
    s = relay.create()
    target = f"127.0.0.1:{free_port()}"
    dial = sp.peer("tcp-dial", relay.url, s["id"], s["responder_token"], "--target", target)
    relay.wait_status(s["id"], lambda st: st["responder_connected"], timeout=10)
    peer = sp.peer(other, relay.url, s["id"], s["initiator_token"], role="initiator",
                   stdin=subprocess.PIPE)  # fmt: skip
    if other == "tcp-listen":
        sp.connect(peer.listen_port())
    dial.wait(20)
    peer.wait(20)
    error_line(dial, f"cannot connect to target {target}", "connection refused")
    error_line(peer, f"the other side failed: cannot connect to target {target}")


@pytest.mark.parametrize(
    ("kind", "victim"),
    [("raw", "initiator"), ("raw", "responder"), ("tcp", "tcp-dial"), ("tcp", "tcp-listen")],
)
def test_the_other_side_killed_mid_stream_is_vanished(
    sp: Spawner, relay: Relay, kind: str, victim: str
) -> None:
    # a: responder / tcp-dial. Without --reconnect 0 the survivor waits for the other side
    # to come back (below).
    _, a, b = start_streaming_pair(sp, relay, kind, "--reconnect", "0")
    killed, survivor = (a, b) if victim in ("responder", "tcp-dial") else (b, a)
    killed.popen.send_signal(signal.SIGKILL)
    survivor.wait(15)
    error_line(survivor, "vanished")


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_with_reconnect_the_survivor_waits_then_says_the_other_side_did_not_come_back(
    sp: Spawner, relay_factory: Any, kind: str
) -> None:
    relay: Relay = relay_factory("--peer-wait", "2s")
    _, a, b = start_streaming_pair(sp, relay, kind)  # --reconnect 2m, the default
    a.popen.send_signal(signal.SIGKILL)
    b.wait(15)
    error_line(b, "the other side did not come back within 2s", "bytes may be lost")
    assert "reconnecting" in b.stderr()


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_with_reconnect_a_relay_that_stays_down_ends_it_after_the_budget(
    sp: Spawner, relay: Relay, kind: str
) -> None:
    _, a, b = start_streaming_pair(sp, relay, kind, "--reconnect", "2s")
    relay.proc.send_signal(signal.SIGTERM)
    for p in (a, b):
        p.wait(15)
        error_line(p, "could not reattach within 2s", "connection refused")
        assert "the relay is restarting; reconnecting" in p.stderr()


# -- 2. usage errors, before anything connects -----------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "extra", "words"),
    [
        ("tcp-dial", ["--target", "nonsense"], "--target 'nonsense'"),
        ("tcp-dial", ["--target", "localhost:0"], "--target 'localhost:0'"),
        ("tcp-dial", ["--target", "localhost:70000"], "--target 'localhost:70000'"),
        ("tcp-dial", ["--target", ":22"], "--target ':22'"),
        ("tcp-listen", ["--listen", "1.2.3.4"], "--listen address '1.2.3.4'"),
        ("tcp-listen", ["--listen", "127.0.0.1:70000"], "--listen address '127.0.0.1:70000'"),
        ("raw", ["--url", "ftp://127.0.0.1:{port}"], "invalid relay URL"),
        ("tcp-dial", ["--url", "127.0.0.1:{port}", "--target", "localhost:22"], "relay URL"),
        ("tcp-listen", ["--url", "http://"], "invalid relay URL"),
        ("raw", ["--url", "http://127.0.0.1:99999"], "invalid relay URL"),
        ("raw", ["--url", "http://127.0.0.1:{port}x"], "invalid relay URL"),
        ("raw", ["--url", "http://[::1"], "invalid relay URL"),
        ("raw", ["--reconnect", "soon"], "--reconnect: invalid duration 'soon'"),
        ("raw", ["--resume-buffer", "1k"], "--resume-buffer must be at least 64KiB"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)  # fmt: skip
def test_usage_errors_exit_2_before_connecting(
    sp: Spawner, cmd: str, extra: list[str], words: str
) -> None:
    # A relay address where something counts connections: a command that tried to attach
    # would be seen here (and would fail with exit 1, not 2).
    relay = sp.target(lambda c: c.close())
    url = f"http://127.0.0.1:{relay.port}"
    argv = peer_argv(cmd, url, "sid", "tok", role="initiator")
    argv += [a.format(port=relay.port) for a in extra]  # a later --url wins
    p = sp.start(argv, cmd, stdin=subprocess.PIPE)
    p.wait(20)
    error_line(p, words, code=2)
    assert relay.accepted == 0


# -- 3. the README's receiver as a background job --------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def test_readme_background_receiver_gets_a_50_mib_file(
    sp: Spawner, relay: Relay, tmp_path: Path
) -> None:
    sent = tmp_path / "file.bin"
    sent.write_bytes(os.urandom(50 * MiB))
    received = tmp_path / "received.bin"
    s = relay.create()
    # swsrs raw … > received.bin &   (a background job's stdin is /dev/null)
    with received.open("wb") as out:
        receiver = sp.peer("raw", relay.url, s["id"], s["responder_token"],
                           stdin=subprocess.DEVNULL, stdout=out)  # fmt: skip
    relay.wait_status(s["id"], lambda st: st["responder_connected"], timeout=10)
    # swsrs raw … --role initiator < file.bin
    sender_out = tmp_path / "sender.out"
    with sent.open("rb") as src, sender_out.open("wb") as out:
        sender = sp.peer("raw", relay.url, s["id"], s["initiator_token"], role="initiator",
                         stdin=src, stdout=out)  # fmt: skip
    sender.wait(60)
    receiver.wait(60)
    assert sha256(received) == sha256(sent)
    assert "received 50.0 MiB" in succeeded(receiver)
    assert "sent 50.0 MiB" in succeeded(sender)
    assert sender_out.read_bytes() == b""  # the receiver sent nothing; its end arrived as EOF


# -- 4. a sender whose peer never comes ------------------------------------------------------


def test_a_sender_alone_gives_up_at_the_peer_wait_and_nothing_is_relayed(
    sp: Spawner, relay_factory: Any, tmp_path: Path
) -> None:
    relay: Relay = relay_factory("--peer-wait", "2s")
    s = relay.create()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(MiB))
    with data.open("rb") as src:
        sender = sp.peer("raw", relay.url, s["id"], s["initiator_token"], role="initiator",
                         stdin=src)  # fmt: skip
        sender.wait(15)
        took = time.monotonic() - sender.started
        # Nothing is read from stdin before the other side is there: the shared offset
        # of the file it was given has not moved.
        assert os.lseek(src.fileno(), 0, os.SEEK_CUR) == 0
    error_line(sender, "nobody came")
    assert 1.5 < took < 7, f"gave up after {took:.1f}s with a 2s peer-wait"
    st = relay.status(s["id"])
    assert st is not None and (st["bytes_in"], st["bytes_out"]) == (0, 0), st
    # A receiver that comes afterwards finds nothing waiting for it.
    out = tmp_path / "late.out"
    with out.open("wb") as f:
        late = sp.peer("raw", relay.url, s["id"], s["responder_token"], stdout=f)
    late.wait(15)
    error_line(late, "nobody came")
    assert out.read_bytes() == b""
    st = relay.status(s["id"])
    assert st is not None and (st["bytes_in"], st["bytes_out"]) == (0, 0), st


# -- 5. pipelines: tar through the tunnel, and both directions at once ----------------------------


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root``: "dir" for directories, sha256 for files."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else sha256(p) for p in root.rglob("*")}


def test_tar_through_raw_gives_an_identical_tree(sp: Spawner, relay: Relay, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "sub" / "deeper").mkdir(parents=True)
    dest.mkdir()
    (src / "README").write_text("hello\n")
    (src / "sub" / "blob.bin").write_bytes(os.urandom(3 * MiB + 17))
    (src / "sub" / "deeper" / "empty").write_bytes(b"")
    (src / "sub" / "deeper" / "small.bin").write_bytes(os.urandom(70_000))
    s = relay.create()
    recv = peer_argv("raw", relay.url, s["id"], s["responder_token"], role="responder")
    send = peer_argv("raw", relay.url, s["id"], s["initiator_token"], role="initiator")
    receiver = sp.start(
        ["bash", "-c", f"{shlex.join(recv)} </dev/null 2>{tmp_path}/recv.err "
         f"| tar x -C {dest}; echo ${{PIPESTATUS[@]}}"],
        "receiver", stdout=subprocess.PIPE,
    )  # fmt: skip
    relay.wait_status(s["id"], lambda st: st["responder_connected"], timeout=10)
    sender = sp.start(
        ["bash", "-c", f"tar c -C {src} . | {shlex.join(send)} >{tmp_path}/send.out "
         f"2>{tmp_path}/send.err; echo ${{PIPESTATUS[@]}}"],
        "sender", stdout=subprocess.PIPE,
    )  # fmt: skip
    for p, err in ((sender, "send.err"), (receiver, "recv.err")):
        p.wait(60)
        assert p.popen.stdout is not None
        statuses = p.popen.stdout.read().decode().split()
        assert statuses == ["0", "0"], (statuses, (tmp_path / err).read_text())
        assert "Traceback" not in (tmp_path / err).read_text()
    assert tree(dest) == tree(src)
    assert len(tree(src)) == 6
    assert (tmp_path / "send.out").read_bytes() == b""


def test_both_directions_at_once(sp: Spawner, relay: Relay, tmp_path: Path) -> None:
    s = relay.create()
    payload = {"initiator": os.urandom(5 * MiB + 3), "responder": os.urandom(3 * MiB + 5)}
    procs: dict[str, Proc] = {}
    for role in ("responder", "initiator"):
        (tmp_path / f"{role}.in").write_bytes(payload[role])
        with (tmp_path / f"{role}.in").open("rb") as i, (tmp_path / f"{role}.out").open("wb") as o:
            procs[role] = sp.peer("raw", relay.url, s["id"], s[f"{role}_token"], role=role,
                                  stdin=i, stdout=o)  # fmt: skip
    for p in procs.values():
        p.wait(60)
    assert (tmp_path / "responder.out").read_bytes() == payload["initiator"]
    assert (tmp_path / "initiator.out").read_bytes() == payload["responder"]
    assert "sent 5.0 MiB, received 3.0 MiB" in succeeded(procs["initiator"])
    assert "sent 3.0 MiB, received 5.0 MiB" in succeeded(procs["responder"])


# -- 6. tcp-dial connects to its target only once the other side is there --------------------------


def test_tcp_dial_connects_only_when_paired_and_half_closes_both_ways(
    sp: Spawner, relay: Relay
) -> None:
    request, reply = os.urandom(2 * MiB + 1), os.urandom(MiB + 7)
    got: dict[str, bytes] = {}
    served = threading.Event()

    def server(conn: socket.socket) -> None:
        # Read the whole request (its end is the client's half-close arriving as EOF),
        # then answer on the same connection and half-close too.
        buf = bytearray()
        while chunk := conn.recv(1 << 16):
            buf += chunk
        got["request"] = bytes(buf)
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
        served.set()
        while conn.recv(1 << 16):
            pass

    target = sp.target(server)
    s = relay.create()
    dial = sp.peer("tcp-dial", relay.url, s["id"], s["responder_token"],
                   "--target", f"127.0.0.1:{target.port}")  # fmt: skip
    dial.wait_line("waiting for the other side of session")
    time.sleep(3)
    assert dial.running(), dial.stderr()
    assert target.accepted == 0, "tcp-dial connected to its target before the other side came"
    listen = sp.peer("tcp-listen", relay.url, s["id"], s["initiator_token"], role="initiator")
    client = sp.connect(listen.listen_port())
    client.sendall(request)
    client.shutdown(socket.SHUT_WR)
    answer = bytearray()
    while chunk := client.recv(1 << 16):
        answer += chunk
    assert served.wait(10)
    assert got["request"] == request
    assert bytes(answer) == reply
    client.close()
    dial.wait(20)
    listen.wait(20)
    succeeded(dial)
    succeeded(listen)
    assert "connected to target" in dial.stderr()
    assert target.accepted == 1


# -- 7. --quiet ----------------------------------------------------------------------------


def test_quiet_success_prints_nothing(sp: Spawner, relay: Relay, tmp_path: Path) -> None:
    s = relay.create()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(MiB))
    out = tmp_path / "out.bin"
    with out.open("wb") as o:
        receiver = sp.peer("raw", relay.url, s["id"], s["responder_token"], "--quiet", stdout=o)
    with data.open("rb") as i:
        sender = sp.peer("raw", relay.url, s["id"], s["initiator_token"], "--quiet",
                         role="initiator", stdin=i)  # fmt: skip
    assert (sender.wait(30), receiver.wait(30)) == (0, 0), sender.stderr() + receiver.stderr()
    assert out.read_bytes() == data.read_bytes()
    assert sender.stderr() == "" and receiver.stderr() == ""


@pytest.mark.parametrize("cmd", ["raw", "tcp-dial"])
def test_quiet_failure_prints_only_the_error(sp: Spawner, relay_factory: Any, cmd: str) -> None:
    relay: Relay = relay_factory("--peer-wait", "2s")
    s = relay.create()
    extra = ["--target", f"127.0.0.1:{free_port()}"] if cmd == "tcp-dial" else []
    p = sp.peer(cmd, relay.url, s["id"], s["responder_token"], *extra, "--quiet",
                stdin=subprocess.PIPE)  # fmt: skip
    p.wait(15)
    line = error_line(p, "nobody came")
    assert p.stderr() == line + "\n"


# -- 8. the Go reference: a peer and a relay that announce nothing --------------------------------


@pytest.fixture
def go() -> Path:
    if not os.access(GO, os.X_OK):
        pytest.skip(f"the Go reference CLI is not at {GO} (a clone outside the workspace?)")
    return GO


@pytest.fixture
def go_relay(go: Path, tmp_path: Path) -> Iterator[Relay]:
    """``swsrs-go serve --no-auth`` on a free port, up once /healthz answers."""
    port = free_port()
    log_path = tmp_path / "go-relay.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(go), "serve", "--no-auth", "--addr", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    relay = Relay(url=f"http://127.0.0.1:{port}", port=port, proc=proc, log_path=log_path)
    deadline = time.monotonic() + 15
    while True:
        try:
            if relay.request("GET", "/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, relay.log()
        assert time.monotonic() < deadline, relay.log()
        time.sleep(0.05)
    yield relay
    relay.stop()


def read_exactly(stream: IO[bytes], n: int, into: bytearray) -> None:
    while len(into) < n and (chunk := stream.read(min(1 << 16, n - len(into)))):
        into += chunk


def fallback_raw_exchange(sp: Spawner, ours: list[str], theirs: list[str], ender: str) -> Proc:
    """Two ``raw`` peers with stdin pipes exchange payloads both ways; then the ender's stdin
    closes, which (without swsrs.v1) ends the tunnel, and the other side's stdout must hold
    everything up to its EOF. Both exit 0. ``ours`` is started first and returned."""
    a = sp.start(ours, "raw", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    time.sleep(0.5)  # attached first: nothing is sent before the other side is there
    b = sp.start(theirs, "raw", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sent = {id(a): os.urandom(MiB + 13), id(b): os.urandom(2 * MiB + 11)}
    got = {id(a): bytearray(), id(b): bytearray()}
    for p in (a, b):
        assert p.popen.stdin is not None
        threading.Thread(target=p.popen.stdin.write, args=(sent[id(p)],), daemon=True).start()
    first, second = (a, b) if ender == "ours" else (b, a)  # first ends; second reads to EOF
    assert first.popen.stdout is not None and second.popen.stdout is not None
    first_reads = threading.Thread(
        target=read_exactly, args=(first.popen.stdout, len(sent[id(second)]), got[id(first)]),
        daemon=True,
    )  # fmt: skip
    second_reads = threading.Thread(  # one byte more than expected: it must meet EOF
        target=read_exactly,
        args=(second.popen.stdout, len(sent[id(first)]) + 1, got[id(second)]),
        daemon=True,
    )  # fmt: skip
    first_reads.start()
    second_reads.start()
    first_reads.join(30)
    assert bytes(got[id(first)]) == sent[id(second)], "the ender did not get every byte"
    assert first.popen.stdin is not None
    first.popen.stdin.close()  # the end of the ender's input ends the tunnel
    second_reads.join(30)
    assert not second_reads.is_alive(), "no EOF on the other side's stdout"
    assert bytes(got[id(second)]) == sent[id(first)]
    first.wait(20)
    second.wait(20)
    assert (a.popen.returncode, b.popen.returncode) == (0, 0), a.stderr() + b.stderr()
    return a


@pytest.mark.parametrize("ender", ["ours", "theirs"])
def test_go_raw_against_our_relay(sp: Spawner, relay: Relay, go: Path, ender: str) -> None:
    s = relay.create()
    ours = peer_argv("raw", relay.url, s["id"], s["responder_token"], role="responder")
    theirs = [str(go), "raw", "--url", relay.ws_url, "--session", s["id"], "--token",
              s["initiator_token"], "--role", "initiator"]  # fmt: skip
    a = fallback_raw_exchange(sp, ours, theirs, ender)
    assert "the other side does not speak swsrs.v1" in a.stderr(), a.stderr()
    assert "Traceback" not in a.stderr()


@pytest.mark.parametrize("ender", ["ours", "theirs"])
def test_our_raw_against_the_go_relay(sp: Spawner, go_relay: Relay, ender: str) -> None:
    s = go_relay.create()
    a = peer_argv("raw", go_relay.url, s["id"], s["responder_token"], role="responder")
    b = peer_argv("raw", go_relay.url, s["id"], s["initiator_token"], role="initiator")
    fallback_raw_exchange(sp, a, b, ender)
    for p in sp.procs:
        assert "the relay does not speak swsrs.v1" in p.stderr(), p.stderr()
        assert "Traceback" not in p.stderr()


def echo(conn: socket.socket) -> None:
    try:
        while data := conn.recv(1 << 16):
            conn.sendall(data)
    except OSError:
        return


def test_our_tcp_pair_against_the_go_relay(sp: Spawner, go_relay: Relay) -> None:
    target = sp.target(echo)
    s = go_relay.create()
    dial = sp.peer("tcp-dial", go_relay.url, s["id"], s["responder_token"],
                   "--target", f"127.0.0.1:{target.port}")  # fmt: skip
    go_relay.wait_status(s["id"], lambda st: st["responder_connected"], timeout=10)
    listen = sp.peer("tcp-listen", go_relay.url, s["id"], s["initiator_token"], role="initiator")
    client = sp.connect(listen.listen_port())
    blob = os.urandom(2 * MiB + 5)
    threading.Thread(target=client.sendall, args=(blob,), daemon=True).start()
    back = bytearray()
    while len(back) < len(blob) and (chunk := client.recv(1 << 16)):
        back += chunk
    assert bytes(back) == blob
    client.close()  # the first end ends the tunnel, as with the reference
    for p in (listen, dial):
        assert p.wait(20) == 0, p.stderr()
        assert "the relay does not speak swsrs.v1" in p.stderr(), p.stderr()
        assert "Traceback" not in p.stderr()
    assert target.accepted == 1

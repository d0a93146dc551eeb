"""The user's own document, ``seed-ssh-tunnel.md``, run for real.

A private OpenSSH server on 127.0.0.1 plays the host behind NAT; the real
``swsrs`` CLI mints a session, exposes sshd with ``tcp-dial`` and binds a
local entry point with ``tcp-listen``; then ``ssh -p`` runs a remote
command and ``scp`` copies a 20 MiB file whose sha256 must match; both CLI
processes must then exit 0 (everything delivered both ways, a clean end).

Beyond the document: ``ssh -o ProxyCommand='swsrs raw …'`` with no local port
at all (a remote command, then ``scp`` of 50 MiB), after which the host's
``tcp-dial`` exits 0 and the ProxyCommand leaves no process behind; and a
host that waits long before its client comes, in front of an sshd with a
short ``LoginGraceTime``, which must not matter because ``tcp-dial`` dials
its target only once the other side has arrived.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Relay, free_port, start_relay

pytestmark = pytest.mark.ssh

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
if not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("scp")):
    pytest.skip("OpenSSH (sshd, ssh, scp) is not installed", allow_module_level=True)


def swsrs_cmd() -> list[str]:
    """The installed console script: the real CLI a user runs."""
    exe = shutil.which(
        "swsrs", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    return [exe] if exe else [sys.executable, "-m", "swsrs"]


@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    proc: subprocess.Popen[bytes]

    def ssh_opts(self) -> list[str]:
        return [
            "-i", str(self.key),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=20",
        ]  # fmt: skip


def start_sshd(d: Path, extra_config: str = "") -> Sshd:
    """A private sshd on 127.0.0.1 with a throwaway host key and user key, in ``d``."""
    d.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "user_key")], check=True
    )
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
{extra_config}"""
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                proc.kill()
                pytest.fail(f"sshd did not start: {err}")
            time.sleep(0.05)
    return Sshd(port=port, user=getpass.getuser(), key=d / "user_key", proc=proc)


def stop_sshd(s: Sshd) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(10)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    s = start_sshd(tmp_path / "sshd")
    yield s
    stop_sshd(s)


def mint_env(relay: Relay) -> dict[str, str]:
    """``swsrs create --admin-url … --output env``, as the document runs it."""
    out = subprocess.run(
        [*swsrs_cmd(), "create", "--admin-url", relay.url, "--output", "env"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    lines = out.strip().splitlines()
    assert [ln.split("=", 1)[0] for ln in lines] == [
        "SWSRS_SESSION",
        "SWSRS_INITIATOR_TOKEN",
        "SWSRS_RESPONDER_TOKEN",
    ]
    return dict(ln.split("=", 1) for ln in lines)


@dataclass
class Peer:
    """A peer CLI process; its stderr goes to a file, so reading it never blocks anything."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_line(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr().splitlines():
                if needle in line:
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never printed {needle!r}: {self.stderr()!r}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_peer(log_dir: Path, name: str, *args: str) -> Peer:
    log = log_dir / f"{name}-{time.monotonic_ns()}.stderr"
    with log.open("wb") as f:
        proc = subprocess.Popen([*swsrs_cmd(), *args], stdin=subprocess.DEVNULL, stderr=f)
    return Peer(name, proc, log)


def assert_exit_0(*peers: Peer, timeout: float = 60) -> None:
    """Every peer exits, and with 0: everything was delivered both ways and the end was clean."""
    codes: dict[str, int | None] = {}
    deadline = time.monotonic() + timeout
    for p in peers:
        try:
            codes[p.name] = p.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            codes[p.name] = None  # still running
    detail = "; ".join(f"{p.name} exit {codes[p.name]} stderr {p.stderr()!r}" for p in peers)
    assert all(c == 0 for c in codes.values()), detail


def start_dial(relay: Relay, env: dict[str, str], sshd: Sshd, log_dir: Path) -> Peer:
    """Host side: expose local sshd (the document's ``tcp-dial``); wait until it is attached."""
    dial = start_peer(
        log_dir, "tcp-dial", "tcp-dial",
        "--url", relay.ws_url,
        "--session", env["SWSRS_SESSION"],
        "--token", env["SWSRS_RESPONDER_TOKEN"],
        "--role", "responder",
        "--target", f"127.0.0.1:{sshd.port}",
    )  # fmt: skip
    relay.wait_status(env["SWSRS_SESSION"], lambda s: s and s["responder_connected"])
    return dial


def start_listen(relay: Relay, env: dict[str, str], log_dir: Path) -> tuple[Peer, int]:
    """Client side: bind a local entry point (the document's ``tcp-listen``)."""
    port = free_port()
    listen = start_peer(
        log_dir, "tcp-listen", "tcp-listen",
        "--url", relay.ws_url,
        "--session", env["SWSRS_SESSION"],
        "--token", env["SWSRS_INITIATOR_TOKEN"],
        "--role", "initiator",
        "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    listen.wait_line(f"listening on 127.0.0.1:{port}")
    return listen, port


@dataclass
class Tunnel:
    dial: Peer
    listen: Peer
    port: int

    def assert_exit_0(self) -> None:
        assert_exit_0(self.listen, self.dial)

    def kill(self) -> None:
        self.dial.kill()
        self.listen.kill()


def open_tunnel(relay: Relay, sshd: Sshd, log_dir: Path) -> Tunnel:
    env = mint_env(relay)
    dial = start_dial(relay, env, sshd, log_dir)
    try:
        listen, port = start_listen(relay, env, log_dir)
    except BaseException:
        dial.kill()
        raise
    return Tunnel(dial, listen, port)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_ssh_remote_command_through_relay(relay: Relay, sshd: Sshd, tmp_path: Path) -> None:
    t = open_tunnel(relay, sshd, tmp_path)
    try:
        r = subprocess.run(
            ["ssh", "-p", str(t.port), *sshd.ssh_opts(), f"{sshd.user}@127.0.0.1",
             "echo tunnel-ok; echo $((6*7))"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["tunnel-ok", "42"]
        # tcp-listen accepts one connection, tunnels it, then exits; tcp-dial follows.
        # Both exit 0: every byte was delivered both ways and the end was clean.
        t.assert_exit_0()
    finally:
        t.kill()


def test_scp_20mib_through_relay(relay: Relay, sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    dst = tmp_path / "copied.bin"
    t = open_tunnel(relay, sshd, tmp_path)
    try:
        r = subprocess.run(
            ["scp", "-P", str(t.port), *sshd.ssh_opts(), str(src), f"{sshd.user}@127.0.0.1:{dst}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert sha256(dst) == sha256(src)
        t.assert_exit_0()
    finally:
        t.kill()
    # The relay counted every byte that crossed it, both ways.
    sessions = relay.request("GET", "/admin/sessions")
    assert sessions[0] == 200


# -- ssh -o ProxyCommand='swsrs raw …': no local port at all ------------------------------


def proxy_command(relay: Relay, env: dict[str, str]) -> str:
    """The ProxyCommand line: the venv's own ``python -m swsrs raw``, quoted for the shell.

    ssh runs it through the user's shell (``$SHELL -c "exec …"``) after expanding
    its ``%`` tokens, so every ``%`` is doubled.
    """
    cmd = shlex.join(
        [sys.executable, "-m", "swsrs", "raw",
         "--url", relay.ws_url,
         "--session", env["SWSRS_SESSION"],
         "--token", env["SWSRS_INITIATOR_TOKEN"],
         "--role", "initiator",
         "--quiet"]
    )  # fmt: skip
    return cmd.replace("%", "%%")


def raw_pids(session: str) -> set[int]:
    """Live (not zombie) ``swsrs raw`` processes for ``session``, found through /proc."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if b"raw" in argv and session.encode() in argv and state != "Z":
            found.add(int(entry.name))
    return found


@dataclass
class ProxyRun:
    returncode: int
    stdout: bytes
    stderr: str  # ssh's, which the ProxyCommand shares: raw's own error lines land here
    raw_seen: set[int]  # the ProxyCommand's raw processes seen while ssh ran


def run_with_proxy(argv: list[str], session: str, log: Path, timeout: float) -> ProxyRun:
    """Run ssh/scp, watching for the ProxyCommand's ``raw`` while it runs.

    ssh's stderr goes to a file: the ProxyCommand inherits it and may outlive
    ssh (ssh only sends it SIGHUP at exit, and never waits for it), so a pipe
    would not tell us when ssh is done.
    """
    seen: set[int] = set()
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    out = bytearray()
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            seen |= raw_pids(session)
            chunk = proc.stdout.read()
            if chunk:
                out += chunk
            if proc.poll() is not None:
                os.set_blocking(proc.stdout.fileno(), True)
                out += proc.stdout.read()
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} still running after {timeout}s: {log.read_text()}")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    return ProxyRun(proc.returncode, bytes(out), log.read_text(errors="replace"), seen)


def assert_no_raw_left(session: str, timeout: float = 15) -> None:
    """The ProxyCommand's ``raw`` is gone soon after ssh exits (it is not ours to wait for)."""
    deadline = time.monotonic() + timeout
    while left := raw_pids(session):
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(pid, 9)  # found by its session id: only the raw this test started
            raise AssertionError(f"the ProxyCommand's swsrs raw is still running: pids {left}")
        time.sleep(0.05)


class HostSideNotClean(AssertionError):
    """The host's ``tcp-dial`` did not exit 0 after ssh/scp was done."""


def assert_host_exit_0(dial: Peer) -> None:
    try:
        assert_exit_0(dial)
    except AssertionError as exc:
        raise HostSideNotClean(str(exc)) from None


# ssh sends SIGHUP to its ProxyCommand right after closing the pipes to it
# (sshconnect.c, ssh_kill_proxy_command) and never waits for it: raw must still
# finish its end-of-stream, or the host's tcp-dial would rightly exit 1.
def test_ssh_remote_command_through_proxycommand_raw(
    relay: Relay, sshd: Sshd, tmp_path: Path
) -> None:
    env = mint_env(relay)
    sid = env["SWSRS_SESSION"]
    dial = start_dial(relay, env, sshd, tmp_path)
    try:
        r = run_with_proxy(
            ["ssh", *sshd.ssh_opts(), "-o", f"ProxyCommand={proxy_command(relay, env)}",
             f"{sshd.user}@host-behind-nat", "echo proxy-ok; echo $((6*7)); uname -s"],
            sid, tmp_path / "ssh.stderr", timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [b"proxy-ok", b"42", os.uname().sysname.encode()]
        assert r.raw_seen, "the ProxyCommand's swsrs raw was never seen running"
        assert_no_raw_left(sid)
        # raw is --quiet: it prints only errors, and there must be none.
        assert r.stderr == "", r.stderr
        assert_host_exit_0(dial)
    finally:
        dial.kill()


def test_scp_50mib_through_proxycommand_raw(relay: Relay, sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    dst = tmp_path / "copied.bin"
    env = mint_env(relay)
    sid = env["SWSRS_SESSION"]
    dial = start_dial(relay, env, sshd, tmp_path)
    try:
        r = run_with_proxy(
            ["scp", *sshd.ssh_opts(), "-o", f"ProxyCommand={proxy_command(relay, env)}",
             str(src), f"{sshd.user}@host-behind-nat:{dst}"],
            sid, tmp_path / "scp.stderr", timeout=180,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert dst.stat().st_size == src.stat().st_size
        assert sha256(dst) == sha256(src)
        assert r.raw_seen, "the ProxyCommand's swsrs raw was never seen running"
        assert_no_raw_left(sid)
        assert r.stderr == "", r.stderr
        assert_host_exit_0(dial)
    finally:
        dial.kill()


# -- a host that waits long for its client, in front of a short LoginGraceTime ---------------

HOST_WAIT = 15.0  # seconds the host side waits before the client side starts
GRACE = 5  # sshd's LoginGraceTime for this test


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed ``sock`` (after whatever it sent)."""
    sock.settimeout(1)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


def test_host_waits_15s_before_client_login_grace_5s(
    relay_factory: Callable[..., Relay], tmp_path: Path
) -> None:
    relay = relay_factory("--peer-wait", "60s")
    grace_sshd = start_sshd(tmp_path / "sshd-grace", f"LoginGraceTime {GRACE}\n")
    probe: socket.socket | None = None
    peers: list[Peer] = []
    try:
        env = mint_env(relay)
        dial = start_dial(relay, env, grace_sshd, tmp_path)
        peers.append(dial)
        # Control: the grace time is real. A connection opened to sshd now (from
        # 127.0.0.2, so that no per-source penalty of newer sshds touches 127.0.0.1)
        # is dropped by sshd long before the host's wait is over, as a tcp-dial that
        # dialled on attaching would have been.
        probe = socket.socket()
        probe.bind(("127.0.0.2", 0))
        probe.connect(("127.0.0.1", grace_sshd.port))
        time.sleep(HOST_WAIT)
        assert _closed_by_peer(probe), f"sshd kept a connection open past LoginGraceTime {GRACE}"
        # The host side is still there, waiting, and has not dialled sshd yet.
        assert dial.proc.poll() is None, dial.stderr()
        assert "connected to target" not in dial.stderr(), dial.stderr()
        st = relay.status(env["SWSRS_SESSION"])
        assert st and st["responder_connected"] and not st["initiator_connected"], st

        listen, port = start_listen(relay, env, tmp_path)
        peers.append(listen)
        r = subprocess.run(
            ["ssh", "-p", str(port), *grace_sshd.ssh_opts(), f"{grace_sshd.user}@127.0.0.1",
             "echo late-login-ok"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["late-login-ok"]
        dial.wait_line(f"connected to target 127.0.0.1:{grace_sshd.port}")
        assert_exit_0(listen, dial)
    finally:
        if probe is not None:
            probe.close()
        for p in peers:
            p.kill()
        stop_sshd(grace_sshd)


# -- relay restarts under a live scp ----------------------------------------------------------


def wait_size(path: Path, size: int, scp: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until the file scp writes on the host side has ``size`` bytes (scp still running)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        assert scp.poll() is None, f"scp ended ({scp.returncode}) before {size} bytes arrived"
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        time.sleep(0.01)


def test_scp_200mib_survives_two_relay_restarts(sshd: Sshd, tmp_path: Path) -> None:
    """The relay (SQLite store, a fixed port) is stopped with SIGTERM and started again, then
    killed with SIGKILL and started again, while scp copies 200 MiB through tcp-listen and
    tcp-dial: the copy is exact, scp exits 0, and both CLI ends are the same processes
    throughout and exit 0 at the end."""
    size = 200 * 1024 * 1024
    src = tmp_path / "payload.bin"
    with src.open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(1024 * 1024))
    dst = tmp_path / "copied.bin"
    port = free_port()
    flags = ("--addr", f"127.0.0.1:{port}", "--store", f"sqlite://{tmp_path / 'sessions.db'}")
    relays = [start_relay(tmp_path, *flags)]
    t: Tunnel | None = None
    scp: subprocess.Popen[bytes] | None = None
    try:
        t = open_tunnel(relays[0], sshd, tmp_path)
        with (tmp_path / "scp.stderr").open("wb") as err:
            scp = subprocess.Popen(
                ["scp", "-P", str(t.port), *sshd.ssh_opts(), str(src),
                 f"{sshd.user}@127.0.0.1:{dst}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        for at, sig in ((60, signal.SIGTERM), (130, signal.SIGKILL)):
            wait_size(dst, at * 1024 * 1024, scp)
            relays[-1].stop(sig)
            relays.append(start_relay(tmp_path, *flags))
            # The same two CLI processes go on: neither ended nor was started again.
            assert t.dial.proc.poll() is None, t.dial.stderr()
            assert t.listen.proc.poll() is None, t.listen.stderr()
        assert scp.wait(180) == 0, (tmp_path / "scp.stderr").read_text()
        assert sha256(dst) == sha256(src)
        assert dst.stat().st_size == size
        t.assert_exit_0()
    finally:
        if scp is not None and scp.poll() is None:
            scp.kill()
            scp.wait()
        if t is not None:
            t.kill()
        for r in relays:
            r.stop()
    err = t.dial.stderr() + t.listen.stderr()
    assert err.count("resumed: the stream goes on") >= 4, err  # two restarts, both ends
    assert "the relay is restarting; reconnecting" in err, err

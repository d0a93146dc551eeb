"""The user's own document, ``seed-ssh-tunnel.md``, run for real.

A private OpenSSH server on 127.0.0.1 plays the host behind NAT; the real
``swsrs`` CLI mints a session, exposes sshd with ``tcp-dial`` and binds a
local entry point with ``tcp-listen``; then ``ssh -p`` runs a remote
command and ``scp`` copies a 20 MiB file whose sha256 must match.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Relay, free_port

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


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    d = tmp_path / "sshd"
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
"""
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    import socket

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
    yield Sshd(port=port, user=getpass.getuser(), key=d / "user_key", proc=proc)
    proc.terminate()
    proc.wait(10)


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
class Tunnel:
    dial: subprocess.Popen[str]
    listen: subprocess.Popen[str]
    port: int

    def wait(self, timeout: float = 60) -> tuple[int, int]:
        return self.listen.wait(timeout), self.dial.wait(timeout)

    def kill(self) -> None:
        for p in (self.dial, self.listen):
            if p.poll() is None:
                p.kill()
                p.wait()


def open_tunnel(relay: Relay, sshd: Sshd) -> Tunnel:
    env = mint_env(relay)
    # Host side: expose local sshd.
    dial = subprocess.Popen(
        [*swsrs_cmd(), "tcp-dial",
         "--url", relay.ws_url,
         "--session", env["SWSRS_SESSION"],
         "--token", env["SWSRS_RESPONDER_TOKEN"],
         "--role", "responder",
         "--target", f"127.0.0.1:{sshd.port}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    relay.wait_status(env["SWSRS_SESSION"], lambda s: s and s["responder_connected"])
    # Client side: bind a local entry point.
    port = free_port()
    listen = subprocess.Popen(
        [*swsrs_cmd(), "tcp-listen",
         "--url", relay.ws_url,
         "--session", env["SWSRS_SESSION"],
         "--token", env["SWSRS_INITIATOR_TOKEN"],
         "--role", "initiator",
         "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert listen.stderr is not None
    line = listen.stderr.readline()
    assert f"127.0.0.1:{port}" in line, line
    return Tunnel(dial, listen, port)


def test_ssh_remote_command_through_relay(relay: Relay, sshd: Sshd) -> None:
    t = open_tunnel(relay, sshd)
    try:
        r = subprocess.run(
            ["ssh", "-p", str(t.port), *sshd.ssh_opts(), f"{sshd.user}@127.0.0.1",
             "echo tunnel-ok; echo $((6*7))"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["tunnel-ok", "42"]
        # tcp-listen accepts one connection, tunnels it, then exits; tcp-dial follows.
        assert t.wait() == (0, 0)
    finally:
        t.kill()


def test_scp_20mib_through_relay(relay: Relay, sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    dst = tmp_path / "copied.bin"
    t = open_tunnel(relay, sshd)
    try:
        r = subprocess.run(
            ["scp", "-P", str(t.port), *sshd.ssh_opts(), str(src), f"{sshd.user}@127.0.0.1:{dst}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert (
            hashlib.sha256(dst.read_bytes()).hexdigest()
            == hashlib.sha256(src.read_bytes()).hexdigest()
        )
        assert t.wait() == (0, 0)
    finally:
        t.kill()
    # The relay counted every byte that crossed it, both ways.
    sessions = relay.request("GET", "/admin/sessions")
    assert sessions[0] == 200

"""Tunnels that survive, behind nginx (``deploy/nginx/swsrs.conf``) in front of relay nodes
on one Redis: ssh and scp through ``tcp-listen``/``tcp-dial`` while the node holding the
session is killed, and while the tunnel is idle for longer than nginx's
``proxy_read_timeout``.

Real processes throughout: ``redis-server``, ``swsrs serve --store redis://``, ``nginx``,
a private ``sshd``, ``ssh``/``scp`` and the CLI ends.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import NGINX, REDIS
from .test_cluster import start_cluster, stop_cluster
from .test_ssh_tunnel import Sshd, Tunnel, open_tunnel, sha256, start_sshd, stop_sshd, wait_size

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.skipif(
        not (os.path.exists(NGINX) and os.path.exists(REDIS)),
        reason="needs nginx and redis-server (installed by .ci/run)",
    ),
]

MiB = 1024 * 1024


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    s = start_sshd(tmp_path / "sshd")
    yield s
    stop_sshd(s)


def session_of(t: Tunnel) -> str:
    args = [str(a) for a in t.dial.proc.args]  # type: ignore[union-attr]
    return args[args.index("--session") + 1]


def test_scp_200mib_survives_a_kill_9_of_the_node_holding_the_session(
    sshd: Sshd, tmp_path: Path
) -> None:
    """nginx hashes the session to the other node, which knows it from Redis; both CLI ends
    reattach there and resume: the copy is exact and everyone exits 0."""
    c = start_cluster(tmp_path, size=2)
    src = tmp_path / "payload.bin"
    with src.open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(MiB))
    dst = tmp_path / "copied.bin"
    t: Tunnel | None = None
    scp: subprocess.Popen[bytes] | None = None
    try:
        front = c.front
        t = open_tunnel(front, sshd, tmp_path)
        with (tmp_path / "scp.stderr").open("wb") as err:
            scp = subprocess.Popen(
                ["scp", "-P", str(t.port), *sshd.ssh_opts(), str(src),
                 f"{sshd.user}@127.0.0.1:{dst}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        wait_size(dst, 80 * MiB, scp)
        sid = session_of(t)
        holder = c.holder(sid)
        holder.proc.send_signal(signal.SIGKILL)
        holder.proc.wait()
        assert scp.wait(180) == 0, (tmp_path / "scp.stderr").read_text()
        assert dst.stat().st_size == 200 * MiB
        assert sha256(dst) == sha256(src)
        t.assert_exit_0()
    finally:
        if scp is not None and scp.poll() is None:
            scp.kill()
            scp.wait()
        if t is not None:
            t.kill()
        stop_cluster(c)
    survivor = next(n for n in c.nodes if n is not holder)
    assert f"attach session={sid}" in survivor.log()  # the peers moved to the other node
    err = t.dial.stderr() + t.listen.stderr()
    assert err.count("resumed: the stream goes on") >= 2, err  # both ends, once at least


# -- an idle ssh session behind nginx's proxy_read_timeout --------------------------------------

READ_TIMEOUT = 2.0  # nginx's proxy_read_timeout in these tests (the shipped file says more)


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line of ``proc``'s stdout within ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = bytearray()
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no full line within {timeout}s: {bytes(line)!r}"
        if select.select([fd], [], [], left)[0]:
            b = os.read(fd, 1)
            assert b, f"ssh closed its stdout: {bytes(line)!r}"
            line += b
    return bytes(line)


@pytest.mark.parametrize("ping_interval", ["0.5s", "0"], ids=["relay-pings", "no-pings"])
def test_an_idle_ssh_session_outlives_three_proxy_read_timeouts(
    sshd: Sshd, tmp_path: Path, ping_interval: str
) -> None:
    """An interactive ssh is silent for three times nginx's ``proxy_read_timeout``, then
    answers. With the relay pinging below that timeout, nginx never times the tunnel out
    and nobody reconnects; with ``--ping-interval 0`` (the control) nginx cuts the silent
    tunnel, which the peers then have to resume."""
    c = start_cluster(
        tmp_path,
        size=1,
        flags=("--ping-interval", ping_interval),
        directives={"proxy_read_timeout": f"{READ_TIMEOUT:g}s"},
    )
    t: Tunnel | None = None
    ssh: subprocess.Popen[bytes] | None = None
    try:
        t = open_tunnel(c.front, sshd, tmp_path)
        ssh = subprocess.Popen(
            ["ssh", "-p", str(t.port), *sshd.ssh_opts(), f"{sshd.user}@127.0.0.1",
             "echo ready; read line; echo got $line"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert read_line(ssh, 30) == b"ready\n"
        time.sleep(3 * READ_TIMEOUT)  # nothing moves, either way
        assert ssh.stdin is not None
        ssh.stdin.write(b"still-there\n")
        ssh.stdin.flush()
        assert read_line(ssh, 30) == b"got still-there\n"
        ssh.stdin.close()
        assert ssh.wait(30) == 0, ssh.stderr.read() if ssh.stderr else ""
        t.assert_exit_0()
    finally:
        if ssh is not None and ssh.poll() is None:
            ssh.kill()
            ssh.wait()
        if t is not None:
            t.kill()
        stop_cluster(c)
    err = t.dial.stderr() + t.listen.stderr()
    nginx_log = c.nginx.error_log()
    if ping_interval == "0":
        # The control: the silence alone is enough for nginx to cut the tunnel.
        assert "upstream timed out" in nginx_log, nginx_log
        assert "reconnecting" in err, err
    else:
        # The relay's pings kept it alive: nginx timed nothing out, nobody reconnected.
        assert "timed out" not in nginx_log, nginx_log
        assert "reconnecting" not in err, err
        assert "resumed" not in err, err

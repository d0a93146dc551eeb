"""Tunnels that survive, behind nginx (``deploy/nginx/swsrs.conf``) in front of relay nodes
on one Redis: ssh and scp through ``tcp-listen``/``tcp-dial`` while the node holding the
session is killed, and while the tunnel is idle for longer than nginx's
``proxy_read_timeout``.

Real processes throughout: ``redis-server``, ``swsrs serve --store redis://``, ``nginx``,
a private ``sshd``, ``ssh``/``scp`` and the CLI ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
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

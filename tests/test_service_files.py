"""deploy/systemd/swsrs.service passes ``systemd-analyze verify``; the relay's sd_notify."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .conftest import SWSRS

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "systemd" / "swsrs.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def verify(unit: Path) -> str:
    """Everything ``systemd-analyze verify`` says about ``unit`` (it exits 0 on unknown keys
    and bad values alike, so its output is the verdict)."""
    assert ANALYZE is not None
    r = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=unit.parent,
    )  # fmt: skip
    return f"{r.returncode}\n{r.stdout}{r.stderr}".strip()


def installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's ``swsrs``: verify checks that the
    binary exists and is executable, and /usr/local/bin/swsrs does not exist here."""
    swsrs = Path(sys.executable).with_name("swsrs")
    assert os.access(swsrs, os.X_OK), swsrs
    text = UNIT.read_text()
    assert text.count("ExecStart=/usr/local/bin/swsrs ") == 1
    copy = tmp_path / "swsrs.service"
    copy.write_text(text.replace("ExecStart=/usr/local/bin/swsrs ", f"ExecStart={swsrs} "))
    return copy


def test_unit_is_hardened() -> None:
    directives = set(re.findall(r"^(\w+=.*)$", UNIT.read_text(), re.M))
    for want in [
        "Type=notify", "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
        "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=swsrs", "LimitNOFILE=65536",
        "Restart=on-failure", "ExecStart=/usr/local/bin/swsrs serve --config /etc/swsrs/swsrs.toml",
    ]:  # fmt: skip
        assert want in directives, want


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    assert verify(installed_copy(tmp_path)) == "0"


@needs_analyze
def test_systemd_analyze_verify_would_see_a_mistake(tmp_path: Path) -> None:
    copy = installed_copy(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt"))
    assert "strickt" in verify(copy)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_once_listening_then_stopping(tmp_path: Path, abstract: bool) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"swsrs-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        notify_socket = "@" + name
    else:
        notify_socket = str(tmp_path / "notify.sock")
        sock.bind(notify_socket)
    sock.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    env["NOTIFY_SOCKET"] = notify_socket
    log = (tmp_path / "relay.log").open("w")
    proc = subprocess.Popen([*SWSRS, "serve", "--no-auth", "--addr", "127.0.0.1:0"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        msg = sock.recv(4096).decode()
        lines = msg.split("\n")
        assert lines[0] == "READY=1", msg
        m = re.search(r"STATUS=listening on (http://127\.0\.0\.1:\d+)", msg)
        assert m, msg
        with urllib.request.urlopen(m.group(1) + "/healthz", timeout=5) as r:  # no retry
            assert r.read() == b"ok"
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()


def test_no_notify_socket_no_notice(tmp_path: Path) -> None:
    from swsrs.server import sdnotify

    old = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        assert sdnotify.notify("READY=1") is False
        os.environ["NOTIFY_SOCKET"] = str(tmp_path / "nobody-listens")
        assert sdnotify.notify("READY=1") is False  # a warning, never an exception
    finally:
        os.environ.pop("NOTIFY_SOCKET", None)
        if old is not None:
            os.environ["NOTIFY_SOCKET"] = old

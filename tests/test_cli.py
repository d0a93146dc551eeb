"""The real ``swsrs`` CLI in subprocesses against a real relay."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import Relay, free_port

SWSRS = [sys.executable, "-m", "swsrs"]
COMMANDS = [
    ["serve"], ["auth"], ["create"], ["tcp-listen"], ["tcp-dial"], ["raw"], ["version"],
    ["sessions"], ["sessions", "list"], ["sessions", "get"], ["sessions", "delete"],
]  # fmt: skip


def run(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWSRS, *args], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The error: the last line, and the only one naming the command (status lines such as
    "waiting…" or "connected…" may come before it, as ssh's do)."""
    lines = r.stderr.strip().splitlines()
    assert lines and "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in lines if ln.startswith("swsrs ")] == lines[-1:], r.stderr
    return lines[-1]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_everywhere(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_version() -> None:
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("swsrs 0.") and "commit" in r.stdout


def test_create_outputs(relay: Relay) -> None:
    r = run("create", "--admin-url", relay.url, "--output", "env")
    assert r.returncode == 0, r.stderr
    keys = [ln.split("=", 1)[0] for ln in r.stdout.splitlines()]
    assert keys == ["SWSRS_SESSION", "SWSRS_INITIATOR_TOKEN", "SWSRS_RESPONDER_TOKEN"]
    r = run(
        "create", output_env := "--output", "json", env={**os.environ, "SWSRS_ADMIN_URL": relay.url}
    )
    assert r.returncode == 0 and '"initiator_token"' in r.stdout, (output_env, r.stderr)
    r = run("sessions", "list", "--admin-url", relay.url)
    assert r.returncode == 0 and r.stdout.count("\n") == 3  # header + two sessions


def echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_tcp_dial_and_listen_roundtrip(relay: Relay) -> None:
    s = relay.create()
    srv, port = echo_server()
    dial = subprocess.Popen(
        [*SWSRS, "tcp-dial", "--url", relay.url, "--session", s["id"], "--token",
         s["responder_token"], "--target", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listen = subprocess.Popen(
        [*SWSRS, "tcp-listen", "--role", "initiator", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SWSRS_URL": relay.ws_url, "SWSRS_SESSION": s["id"],
             "SWSRS_TOKEN": s["initiator_token"]},
    )  # fmt: skip
    try:
        assert listen.stderr is not None
        line = listen.stderr.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        lport = int(line.rsplit(":", 1)[1])
        blob = os.urandom(4 * 1024 * 1024)
        with socket.create_connection(("127.0.0.1", lport), timeout=30) as c:
            threading.Thread(target=c.sendall, args=(blob,), daemon=True).start()
            got = bytearray()
            while len(got) < len(blob):
                got += c.recv(1 << 20)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        assert listen.wait(30) == 0
        assert dial.wait(30) == 0
    finally:
        for p in (dial, listen):
            if p.poll() is None:
                p.kill()
                p.wait()
        srv.close()


def raw_roundtrip(
    relay: Relay,
    blob: bytes,
    *,
    receiver_args: tuple[str, ...] = (),
    receiver_env: dict[str, str] | None = None,
    sender_url: str | None = None,
    sender_env: dict[str, str] | None = None,
) -> None:
    """``swsrs raw`` as responder (stdout) and initiator (stdin): ``blob`` arrives whole."""
    s = relay.create()
    # The receiver's stdin is empty (as for a background job): it only receives, and
    # exits 0 once the sender's end-of-stream has arrived and everything is written.
    receiver = subprocess.Popen(
        [*SWSRS, "raw", "--url", relay.url, "--session", s["id"], "--token",
         s["responder_token"], *receiver_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=receiver_env,
    )  # fmt: skip
    try:
        relay.wait_status(s["id"], lambda st: st["responder_connected"])
        got: list[bytes] = []
        assert receiver.stdout is not None
        reading = threading.Thread(target=lambda: got.append(receiver.stdout.read()))  # type: ignore[union-attr]
        reading.start()
        sender = subprocess.run(
            [*SWSRS, "raw", "--url", sender_url or relay.url, "--session", s["id"], "--token",
             s["initiator_token"], "--role", "initiator"],
            input=blob, capture_output=True, timeout=60, env=sender_env,
        )  # fmt: skip
        assert sender.returncode == 0, sender.stderr
        assert receiver.wait(60) == 0
        reading.join(10)
        assert got == [blob]
        assert b"done: sent 0 B, received" in sender.stderr + receiver.stderr.read()  # type: ignore[union-attr]
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


def test_raw_pipes_stdin_to_stdout(relay: Relay) -> None:
    raw_roundtrip(relay, os.urandom(2 * 1024 * 1024))


def test_errors_are_one_line_with_exit_codes(relay: Relay) -> None:
    s = relay.create()
    dead = f"http://127.0.0.1:{free_port()}"
    peer = ["--session", s["id"], "--token", s["initiator_token"]]
    r = run("raw", "--url", dead, *peer)
    assert r.returncode == 1 and "cannot reach the relay" in one_line_error(r)
    r = run("raw", "--url", relay.url, "--session", "nope", "--token", "x")
    assert r.returncode == 1 and "not found" in one_line_error(r)
    r = run("raw", "--url", relay.url, "--session", s["id"], "--token", "wrong")
    assert r.returncode == 1 and "token" in one_line_error(r)
    r = run(
        "raw",
        "--url",
        relay.url,
        "--token",
        "x",
        env={k: v for k, v in os.environ.items() if k != "SWSRS_SESSION"},
    )
    assert r.returncode == 2 and "--session" in one_line_error(r)
    r = run("raw", "--url", relay.url, *peer, "--role", "boss")
    assert r.returncode == 2
    r = run("create", "--admin-url", dead)
    assert r.returncode == 1 and "cannot reach the relay" in one_line_error(r)
    r = run("sessions", "get", "--admin-url", relay.url, "nope")
    assert r.returncode == 1 and "404" in one_line_error(r)


def test_unreachable_target_releases_the_other_peer(relay: Relay) -> None:
    s = relay.create()
    waiting = subprocess.Popen(
        [*SWSRS, "raw", "--url", relay.url, "--session", s["id"], "--token", s["initiator_token"],
         "--role", "initiator"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    relay.wait_status(s["id"], lambda st: st["initiator_connected"])
    r = run("tcp-dial", "--url", relay.url, "--session", s["id"], "--token", s["responder_token"],
            "--target", f"127.0.0.1:{free_port()}")  # fmt: skip
    assert r.returncode == 1 and "cannot connect to target" in one_line_error(r)
    _, err = waiting.communicate(timeout=30)  # told by the other side: exits on its own
    assert waiting.returncode == 1, err
    assert (
        err.decode()
        .splitlines()[-1]
        .startswith("swsrs raw: the other side failed: cannot connect to target 127.0.0.1:")
    ), err


def test_token_and_session_values_may_start_with_a_dash() -> None:
    """Tokens and ids are base64url: one in 64 starts with "-"."""
    from swsrs.cli.main import _glue_opaque_values, build_parser

    argv = ["tcp-listen", "--session", "-sid", "--token", "-tok", "--role", "initiator"]
    args = build_parser().parse_args(_glue_opaque_values(argv))
    assert (args.session, args.token, args.role) == ("-sid", "-tok", "initiator")
    r = run("raw", "--url", "ws://127.0.0.1:1", "--session", "-x", "--token", "-y",
            stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 1 and "expected one argument" not in r.stderr, r.stderr


# -- usage errors name the subcommand ------------------------------------------------------


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_usage_errors_name_the_subcommand(cmd: list[str]) -> None:
    r = run(*cmd, "--bogus")
    assert r.returncode == 2 and one_line_error(r).startswith(f"swsrs {' '.join(cmd)}: "), r.stderr
    assert f"(see swsrs {' '.join(cmd)} --help)" in r.stderr


@pytest.mark.parametrize(
    ("cmd", "env"),
    [
        (["serve", "--no-auth", "--peer-wait", "5minutes"], {}),
        (["serve", "--no-auth"], {"SWSRS_PEER_WAIT": "5minutes"}),
        (["serve", "--no-auth", "--max-frame-size", "lots"], {}),
        (["sessions", "list"], {}),
        (["sessions", "delete", "x"], {}),
        (["raw", "--url", "ws://127.0.0.1:9"], {}),
        (
            [
                "tcp-listen",
                "--url",
                "ws://127.0.0.1:9",
                "--session",
                "s",
                "--token",
                "t",
                "--listen",
                "nowhere",
            ],
            {},
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_values_checked_after_parsing_name_the_subcommand(
    cmd: list[str], env: dict[str, str]
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    r = run(*cmd, env={**clean, **env}, stdin=subprocess.DEVNULL)
    sub = " ".join(cmd[:2]) if cmd[0] == "sessions" else cmd[0]
    assert r.returncode == 2 and one_line_error(r).startswith(f"swsrs {sub}: "), r.stderr


# -- --debug: a traceback only when asked ---------------------------------------------------

# The real CLI, with one function made to fail the way no code path expects.
FAULT = """
import swsrs.client.admin as admin
def fail(*args, **kwargs):
    raise RuntimeError("injected fault")
admin.AdminClient.list = fail
from swsrs.cli.main import main
main()
"""


@pytest.mark.parametrize(
    ("where", "env", "traceback"),
    [
        ("", "", False),
        ("", "0", False),
        ("before", "", True),
        ("after", "", True),
        ("", "1", True),
    ],
)
def test_unexpected_errors_are_one_line_unless_debugging(
    relay: Relay, where: str, env: str, traceback: bool
) -> None:
    cmd = ["sessions", "list", "--admin-url", relay.url]
    cmd = {"before": ["--debug", *cmd], "after": [*cmd, "--debug"]}.get(where, cmd)
    r = subprocess.run(
        [sys.executable, "-c", FAULT, *cmd], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SWSRS_DEBUG": env},
    )  # fmt: skip
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("swsrs sessions list: ") and "RuntimeError: injected fault" in last
    if traceback:
        assert r.stderr.startswith("Traceback") and 'File "<string>"' in r.stderr
    else:
        one_line_error(r)


STRAY = """
import asyncio, gc, threading
import swsrs._version as version
real = version.build_info
class Leaky:
    def __del__(self):
        raise RuntimeError("unraisable fault")
async def fail():
    raise RuntimeError("task fault")
async def orphan():
    asyncio.get_running_loop().create_task(fail())
    await asyncio.sleep(0.05)
def noisy():
    thread = threading.Thread(target=lambda: 1 / 0)
    thread.start()
    thread.join()
    asyncio.run(orphan())
    gc.collect()
    Leaky()
    return real()
version.build_info = noisy
from swsrs.cli.main import main
main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_stray_tracebacks_are_one_line_unless_debugging(debug: bool) -> None:
    """A thread that dies, an asyncio task nobody awaited, "Exception ignored in …"."""
    r = subprocess.run(
        [sys.executable, "-c", STRAY, "version", *(["--debug"] if debug else [])],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SWSRS_DEBUG"},
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("swsrs 0."), r.stderr
    if debug:
        assert r.stderr.count("Traceback") >= 2 and "unraisable fault" in r.stderr
    else:
        lines = r.stderr.splitlines()
        assert all(ln.startswith("swsrs version: ") for ln in lines), r.stderr
        assert any("ZeroDivisionError" in ln for ln in lines), r.stderr
        assert any("task fault" in ln for ln in lines), r.stderr


# -- version: the commit of the clone -------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()  # fmt: skip


@pytest.fixture
def head() -> str:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git clone, or no git")
    return git("rev-parse", "HEAD")[:12]


def version_line(pythonpath: Path, *, with_git: bool) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWSRS_", "GIT_"))}
    env["PYTHONPATH"] = str(pythonpath)
    if not with_git:
        env["PATH"] = "/nonexistent"
    r = subprocess.run([*SWSRS, "version"], capture_output=True, text=True, timeout=60, env=env,
                       cwd=pythonpath)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_version_from_the_clone_names_its_commit(head: str) -> None:
    assert f"(commit {head}, built " in version_line(ROOT / "src", with_git=True)
    assert version_line(ROOT / "src", with_git=False).endswith("(commit unknown, built unknown)")


def test_a_wheel_built_from_the_clone_records_its_commit(head: str, tmp_path: Path) -> None:
    """`pip install .` from a clone: the build writes the commit into the package."""
    pytest.importorskip("setuptools", minversion="77")
    clone = tmp_path / "clone"
    git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone))
    # The work tree as it is now (tracked and new files), on the commit the clone has.
    for name in git("ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"),
                    str(clone)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "w").glob("swsrs-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    line = version_line(site, with_git=False)
    assert f"(commit {head}, built " in line and "unknown" not in line, line

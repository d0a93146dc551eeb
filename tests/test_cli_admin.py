"""``swsrs create`` and ``swsrs sessions``: what they print, against a real relay and against
small servers on 127.0.0.1 that answer the way a relay should not (or the Go reference does)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import Relay
from .pki import make_pki, start_tls_relay
from .test_cli import SWSRS, one_line_error, run

Reply = tuple[int, str, bytes]  # status, Content-Type, body
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@contextmanager
def http_server(replies: dict[str, Reply]) -> Iterator[str]:
    """An HTTP server answering ``"METHOD /path"`` from ``replies`` (else 404), so discovery
    says "no auth"; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            status, ctype, body = replies.get(
                f"{self.command} {self.path}", (404, "text/plain", b"no")
            )
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(answer: bytes | None) -> Iterator[tuple[str, threading.Event]]:
    """A TCP server that answers every connection with ``answer`` (not HTTP), or with
    nothing at all while it stays open (``None``); yields its URL and an event set once
    a connection came in."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    connected = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            connected.set()
            if answer is None:
                held.append(conn)
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", connected
    finally:
        srv.close()
        for c in held:
            c.close()


def as_json(doc: object) -> Reply:
    return 200, "application/json", json.dumps(doc).encode()


GO_STATUS = {  # times as Go's encoding/json writes them: RFC 3339, local offset, nanoseconds
    "id": "s1", "state": "open",
    "created_at": "2026-03-01T12:00:00.123456789+02:00",
    "expires_at": "2026-03-01T13:00:00.25+02:00",
    "last_activity": "2026-03-01T10:00:00Z",
    "bytes_in": 5, "bytes_out": 7, "initiator_connected": True, "responder_connected": True,
}  # fmt: skip
GO_CREATED = {
    **{k: GO_STATUS[k] for k in ("id", "created_at", "expires_at")},
    "initiator_token": "i",
    "responder_token": "r",
}
GO_STATUS_UTC = {
    "created_at": "2026-03-01T10:00:00.123456Z",  # a datetime holds microseconds
    "expires_at": "2026-03-01T11:00:00.25Z",
    "last_activity": "2026-03-01T10:00:00Z",
}


def test_times_are_printed_in_utc_with_their_fraction() -> None:
    """Decision: every time the CLI prints is RFC 3339 in UTC with ``Z`` (the relay's own
    form), fractional seconds kept, whatever offset the relay wrote."""
    replies = {
        "POST /admin/sessions": (201, "application/json", json.dumps(GO_CREATED).encode()),
        "GET /admin/sessions": as_json({"sessions": [GO_STATUS]}),
        "GET /admin/sessions/s1": as_json(GO_STATUS),
    }
    with http_server(replies) as url:
        r = run("sessions", "get", "--admin-url", url, "s1")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {**GO_STATUS, **GO_STATUS_UTC}
        r = run("sessions", "list", "--admin-url", url, "--output", "json")
        assert json.loads(r.stdout) == {"sessions": [{**GO_STATUS, **GO_STATUS_UTC}]}
        r = run("sessions", "list", "--admin-url", url)
        assert r.stdout.splitlines()[1].split()[-1] == GO_STATUS_UTC["expires_at"]
        r = run("create", "--admin-url", url)
        doc = json.loads(r.stdout)
        assert (doc["created_at"], doc["expires_at"]) == (
            GO_STATUS_UTC["created_at"], GO_STATUS_UTC["expires_at"])  # fmt: skip


def test_times_from_the_relay_are_printed_as_it_sent_them(relay: Relay) -> None:
    sid = relay.create()["id"]
    sent = relay.status(sid)
    assert sent is not None
    r = run("sessions", "get", "--admin-url", relay.url, sid)
    assert json.loads(r.stdout) == sent  # the --output json form is the relay's own
    for key in ("created_at", "expires_at", "last_activity"):
        assert RFC3339_UTC.match(sent[key]), sent
    r = run("sessions", "list", "--admin-url", relay.url)
    assert r.stdout.splitlines()[1].split()[-1] == sent["expires_at"]


Doc = dict[str, object]
MALFORMED: dict[str, tuple[str, Callable[[Doc], Reply | Doc]]] = {  # id: problem, break a doc
    "html": ("not JSON", lambda d: (200, "text/html", b"<html>oops</html>")),
    "bad-json": ("not JSON", lambda d: (200, "application/json", b"{not json")),
    "array": ("wrong shape", lambda d: (200, "application/json", b"[1, 2]")),
    "null": ("wrong shape", lambda d: (200, "application/json", b"null")),
    "no-id": ("missing field 'id'", lambda d: {k: v for k, v in d.items() if k != "id"}),
    "id-number": ("wrong shape", lambda d: {**d, "id": 5}),
    "bad-time": ("bad value", lambda d: {**d, "created_at": "yesterday"}),
    "no-offset": (
        "bad value (created_at 2026-03-01T10:00:00 has no UTC offset)",
        lambda d: {**d, "created_at": "2026-03-01T10:00:00"},
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_reply_is_one_line(case: str) -> None:
    problem, broken = MALFORMED[case]

    def reply(doc: Doc, wrap: str | None = None) -> Reply:
        bad = broken(doc)
        if isinstance(bad, tuple):
            return bad
        return as_json({wrap: [bad]} if wrap else bad)

    cases = [
        (["create"], "POST /admin/sessions", reply(GO_CREATED)),
        (["sessions", "list"], "GET /admin/sessions", reply(GO_STATUS, wrap="sessions")),
        (["sessions", "get"], "GET /admin/sessions/s1", reply(GO_STATUS)),
    ]
    with http_server({request: answer for _, request, answer in cases}) as url:
        for cmd, request, _ in cases:
            r = run(*cmd, "--admin-url", url, *(["s1"] if cmd[-1] == "get" else []))
            line = one_line_error(r)
            assert r.returncode == 1 and line.startswith(f"swsrs {' '.join(cmd)}: "), line
            assert f"malformed reply from the relay to {request}: {problem}" in line, line


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b""], ids=["not-http", "hang-up"])
def test_a_reply_that_is_not_http_is_one_line(answer: bytes) -> None:
    with raw_server(answer) as (url, _):
        for cmd in (["create"], ["sessions", "list"], ["sessions", "get", "x"],
                    ["sessions", "delete", "x"]):  # fmt: skip
            r = run(*cmd, "--admin-url", url, "--oidc-token", "t")
            assert r.returncode == 1 and url.removeprefix("http://") in one_line_error(r)


def test_ctrl_c_while_waiting_for_the_relay_exits_130_quietly() -> None:
    with raw_server(None) as (url, connected):  # accepts, never answers
        p = subprocess.Popen([*SWSRS, "sessions", "list", "--admin-url", url, "--oidc-token", "t"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert connected.wait(30)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert (p.returncode, err) == (130, "")


def test_a_closed_stdout_ends_the_cli_like_git(relay: Relay) -> None:
    """`swsrs sessions list | head -1`: killed by SIGPIPE, as git and ls are (the shell
    says 141 and prints nothing); no "Broken pipe", no traceback."""
    for _ in range(3):
        relay.create()
    for cmd in (["sessions", "list", "--admin-url", relay.url],
                ["sessions", "list", "--admin-url", relay.url, "--output", "json"],
                ["create", "--admin-url", relay.url, "--output", "env"],
                ["version"]):  # fmt: skip
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        try:
            p = subprocess.run([*SWSRS, *cmd], stdout=write, stderr=subprocess.PIPE, timeout=60)
        finally:
            os.close(write)
        assert (p.returncode, p.stderr) == (-signal.SIGPIPE, b""), cmd
    for _ in range(200):
        relay.create()
    p = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -1 >/dev/null', "sh", *SWSRS, "sessions",
         "list", "--admin-url", relay.url],
        stderr=subprocess.PIPE, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode in (0, 141) and p.stderr == "", (p.returncode, p.stderr)


def test_ca_file_is_trusted_besides_the_system_store(tmp_path: Path) -> None:
    """README: `--ca-file` adds its CAs to the system trust store; it does not replace it."""
    pki, other = make_pki(tmp_path / "relay-ca"), make_pki(tmp_path / "other-ca")
    relay = start_tls_relay(tmp_path, pki)
    drop = ("SWSRS_", "SSL_CERT_FILE", "SSL_CERT_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    system_trusts_relay = {**env, "SSL_CERT_FILE": str(pki.ca_cert)}  # the "system" store
    try:
        for ca, environ, status in [
            (pki.ca_cert, env, 0),
            (other.ca_cert, env, 1),  # the file alone does not vouch for the relay
            (other.ca_cert, system_trusts_relay, 0),  # the system store is still trusted
        ]:
            r = run("sessions", "list", "--admin-url", relay.url, "--ca-file", str(ca), env=environ)
            assert r.returncode == status, r.stderr
            if status:
                assert "certificate" in one_line_error(r).lower()
    finally:
        relay.stop()

"""``--store sqlite://PATH``: sessions survive a restart; bad files fail at start, clearly."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import start_relay
from .test_relay import attach, old_tokens_still_work


async def test_sessions_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    relay = start_relay(tmp_path, "--store", f"sqlite://{db}")
    s = relay.create()
    before = relay.status(s["id"])
    assert relay.stop() == 0

    relay = start_relay(tmp_path, "--store", f"sqlite://{db}")
    try:
        assert before is not None
        await old_tokens_still_work(relay, s, before)
    finally:
        relay.stop()

    relay = start_relay(tmp_path, "--store", f"sqlite://{db}")
    try:
        assert relay.status(s["id"]) is None  # deleted stays deleted
    finally:
        relay.stop()


def test_tokens_are_stored_as_digests_only(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    relay = start_relay(tmp_path, "--store", f"sqlite://{db}")
    try:
        s = relay.create()
    finally:
        relay.stop()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("sessions.db*"))
    for token in (s["initiator_token"], s["responder_token"]):
        assert token.encode() not in raw
    rows = sqlite3.connect(db).execute("SELECT * FROM sessions").fetchall()
    assert len(rows) == 1 and rows[0][0] == s["id"]
    assert all(len(v) == 32 for v in rows[0][1:3])  # SHA-256 digests


def test_expired_sessions_are_reaped_from_the_file(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    relay = start_relay(tmp_path, "--store", f"sqlite://{db}", "--session-ttl", "1s",
                        "--reap-interval", "1s")  # fmt: skip
    try:
        s = relay.create()
        relay.wait_status(s["id"], lambda st: st is None)

        def rows() -> int:
            return int(sqlite3.connect(db).execute("SELECT count(*) FROM sessions").fetchone()[0])

        end = time.monotonic() + 30
        while rows() and time.monotonic() < end:
            time.sleep(0.1)
        assert rows() == 0
    finally:
        relay.stop()


def serve_fails(tmp_path: Path, store: str, *, user: list[str] | None = None) -> str:
    p = subprocess.run(
        [*(user or []), sys.executable, "-m", "swsrs", "serve", "--no-auth",
         "--addr", "127.0.0.1:0", "--store", store],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1, (p.returncode, p.stderr)
    errors = [line for line in p.stderr.splitlines() if line.startswith("swsrs serve:")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    return errors[0]


def test_corrupt_file(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    db.write_bytes(os.urandom(8192))
    line = serve_fails(tmp_path, f"sqlite://{db}")
    assert "not a database" in line or "corrupt" in line


def test_locked_file(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        line = serve_fails(tmp_path, f"sqlite://{db}")
        assert "locked" in line
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
    reason="needs root and setpriv to run the relay without root's privileges",
)
def test_read_only_file(tmp_path: Path) -> None:
    # The relay runs as root stripped of every capability: the file's mode bits then
    # hold it like any user (a 0444 file is read-only even to its owner), while what
    # root owns stays reachable: a clone under a 0700 directory, pyenv's Python under
    # /root, which an unprivileged user (setpriv --reuid=nobody) could not enter.
    no_caps = ["/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all",
               "--bounding-set=-all", "--"]  # fmt: skip
    if subprocess.run([*no_caps, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop capabilities here")
    db = tmp_path / "sessions.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    db.chmod(0o444)
    line = serve_fails(tmp_path, f"sqlite://{db}", user=no_caps)
    assert "readonly" in line or "read-only" in line


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        ("sqlite://", "needs a file path"),
        ("postgres://x", "--store"),
        ("redis://x:notaport", "bad port"),
    ],
)
def test_bad_store_urls_exit_2(store: str, needle: str, tmp_path: Any) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "swsrs", "serve", "--no-auth", "--store", store],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1


async def test_a_store_that_fails_later_answers_503(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    relay = start_relay(tmp_path, "--store", f"sqlite://{db}")
    try:
        s = relay.create()
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # someone else locks the file while we run
        try:
            code, _, body = relay.request("POST", "/admin/sessions")
            assert code == 503 and b"session store unavailable" in body and b"locked" in body
            # Reads are not blocked in WAL mode: the data plane keeps attaching.
            a = await attach(relay, s["id"], s["initiator_token"])
            await a.close()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert relay.request("POST", "/admin/sessions")[0] == 201  # and it recovers
        a = await attach(relay, s["id"], s["initiator_token"])
        await a.close()
        assert "Traceback" not in relay.log()
    finally:
        relay.stop()

"""Shared fixtures: a real ``swsrs serve`` process on 127.0.0.1, started and stopped per test."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .oidc_idp import AUDIENCE, CLI_CLIENT, IdP, SigningKey, ec_key, node_missing_reason, rsa_key

SWSRS = [sys.executable, "-m", "swsrs"]
LISTENING = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Relay:
    """A running relay process and helpers to talk to it over real HTTP."""

    url: str
    port: int
    proc: subprocess.Popen[str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    ca: ssl.SSLContext | None = None  # for a relay serving https://: trust this

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ca) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def create(self) -> dict[str, Any]:
        status, _, body = self.request("POST", "/admin/sessions")
        assert status == 201, body
        return dict(json.loads(body))

    def status(self, sid: str) -> dict[str, Any] | None:
        status, _, body = self.request("GET", f"/admin/sessions/{sid}")
        if status == 404:
            return None
        assert status == 200, body
        return dict(json.loads(body))

    def wait_status(self, sid: str, pred: Any, timeout: float = 30.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        st = self.status(sid)
        while not pred(st):
            if time.monotonic() > deadline:
                raise AssertionError(f"session {sid} never reached the expected state: {st}")
            time.sleep(0.02)
            st = self.status(sid)
        return st

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_relay(
    tmp_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    no_auth: bool = True,
    ca: ssl.SSLContext | None = None,
) -> Relay:
    """Start ``swsrs serve [--no-auth]`` on a port of its own choosing and wait for /healthz.

    The relay binds ``127.0.0.1:0`` and the test reads the port from its
    "listening on" log line, so no other process can take the port between
    picking and binding it.
    """
    log_path = tmp_path / f"relay-{time.monotonic_ns()}.log"
    auth = ["--no-auth"] if no_auth else []
    args = [*SWSRS, "serve", *auth, "--addr", "127.0.0.1:0", *extra]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWSRS_LOG_LEVEL": "info", **(env or {})}
    logf = log_path.open("w")
    proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, text=True, env=full_env)
    relay = Relay(url="", port=0, proc=proc, log_path=log_path, args=args, ca=ca)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"relay exited early ({proc.returncode}):\n{relay.log()}")
        if not relay.port:
            m = LISTENING.search(relay.log())
            if m:
                relay.port = int(m.group(2))
                relay.url = f"{m.group(1)}://127.0.0.1:{relay.port}"
        if relay.port:
            try:
                with urllib.request.urlopen(relay.url + "/healthz", timeout=1, context=ca) as r:
                    if r.status == 200:
                        return relay
            except OSError:
                pass
        if time.monotonic() > deadline:
            relay.stop(signal.SIGKILL)
            raise RuntimeError(f"relay did not come up:\n{relay.log()}")
        time.sleep(0.05)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = start_relay(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Any]:
    """Start relays with extra flags; all are stopped at teardown."""
    started: list[Relay] = []

    def make(*extra: str, env: dict[str, str] | None = None) -> Relay:
        r = start_relay(tmp_path, *extra, env=env)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


# -- a real OpenID provider (tests/idp: oidc-provider on Node) ------------------------


_idp_numbers = itertools.count()


def make_idp(directory: Path, *args: str, keys: list[SigningKey] | None = None) -> IdP:
    """Start an IdP on a free port, signing with ``keys`` (default: one RSA and one EC key)."""
    if (why := node_missing_reason()) is not None:
        pytest.skip(why)
    name = directory / f"idp-{next(_idp_numbers)}"
    idp = IdP(port=0, keys_path=name.with_suffix(".keys.json"), log_path=name.with_suffix(".log"),
              keys=[], args=list(args))  # fmt: skip
    idp.write_keys(keys or [rsa_key("rsa-1"), ec_key("ec-1")])
    idp.start()
    return idp


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    """One IdP for the session; tests that change it (keys, hooks) use ``idp_factory``."""
    i = make_idp(tmp_path_factory.mktemp("idp"), "--interval", "1")
    yield i
    i.stop()


@pytest.fixture
def idp_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[IdP] = []

    def make(*args: str, keys: list[SigningKey] | None = None) -> IdP:
        i = make_idp(tmp_path, *args, keys=keys)
        started.append(i)
        return i

    yield make
    for i in started:
        i.stop()


def oidc_flags(idp: IdP) -> list[str]:
    return ["--oidc-issuer", idp.issuer, "--oidc-audience", AUDIENCE,
            "--oidc-client-id", CLI_CLIENT]  # fmt: skip

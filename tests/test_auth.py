"""Client-side auth against a real OpenID provider: the device grant, saved tokens,
refresh, and the ``swsrs auth`` / ``swsrs create`` CLI end to end in subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import swsrs
from swsrs.client.tokens import FileTokenStore, Token

from .conftest import Relay, make_idp, oidc_flags, start_relay
from .oidc_idp import CLI_CLIENT, IdP, approve_device

SWSRS = [sys.executable, "-m", "swsrs"]


@pytest.fixture(scope="module")
def oidc_relay(idp: IdP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = start_relay(tmp_path_factory.mktemp("relay"), *oidc_flags(idp), no_auth=False)
    yield r
    r.stop()


def approve_in_background(auth: swsrs.DeviceAuthorization, *, abort: bool = False) -> None:
    url = auth.verification_uri_complete
    assert url is not None
    threading.Thread(target=approve_device, args=(url,), kwargs={"abort": abort}).start()


# -- SDK -------------------------------------------------------------------------------


async def test_device_login_and_token_provider(oidc_relay: Relay, tmp_path: Path) -> None:
    seen: list[swsrs.DeviceAuthorization] = []

    async def prompt(auth: swsrs.DeviceAuthorization) -> None:  # an async prompt works too
        seen.append(auth)
        approve_in_background(auth)

    token = await swsrs.device_login(oidc_relay.url, prompt=prompt)
    assert len(seen) == 1 and seen[0].user_code and seen[0].verification_uri
    assert token.refresh_token and token.expiry and not token.expired()
    assert (token.client_id, token.token_type.lower()) == (CLI_CLIENT, "bearer")

    store = FileTokenStore(tmp_path / "sub" / "credentials.json")
    store.save(token)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    provider = swsrs.RefreshingTokenProvider(store, relay_url=oidc_relay.url)
    async with swsrs.AdminClient(oidc_relay.url, provider) as admin:
        s = await admin.create()
        assert (await admin.get(s.id)).state == "pending"

        # Expired on the client's clock: the provider refreshes and saves the result.
        store.save(Token.from_json({**token.to_json(), "expiry": "2000-01-01T00:00:00Z"}))
        await admin.delete(s.id)
        saved = store.load()
        assert saved is not None and not saved.expired()
        assert saved.access_token != token.access_token
        assert saved.refresh_token and saved.refresh_token != token.refresh_token  # rotated
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


async def test_refused_refresh_needs_login(oidc_relay: Relay, tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "credentials.json")
    store.save(Token("x", refresh_token="bogus", expiry=datetime(2000, 1, 1, tzinfo=UTC),
                     token_endpoint=(await swsrs.discover(oidc_relay.url))["token_endpoint"],
                     client_id=CLI_CLIENT))  # fmt: skip
    with pytest.raises(swsrs.LoginRequired, match="refused the refresh"):
        await swsrs.RefreshingTokenProvider(store)()
    with pytest.raises(swsrs.LoginRequired):
        await swsrs.RefreshingTokenProvider(FileTokenStore(tmp_path / "none.json"))()


async def test_reference_style_file_refreshes_through_discovery(
    oidc_relay: Relay, tmp_path: Path
) -> None:
    """A file with only the reference's four keys (Go's time format) still refreshes."""
    token = await swsrs.device_login(oidc_relay.url, prompt=approve_in_background)
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({
        "access_token": token.access_token, "token_type": "Bearer",
        "refresh_token": token.refresh_token, "expiry": "2001-02-03T04:05:06.123456789+02:00",
    }))  # fmt: skip
    provider = swsrs.RefreshingTokenProvider(FileTokenStore(path), relay_url=oidc_relay.url)
    async with swsrs.AdminClient(oidc_relay.url, provider) as admin:
        await admin.create()
    assert json.loads(path.read_text())["expiry"].endswith("Z")


async def test_access_denied(oidc_relay: Relay) -> None:
    with pytest.raises(swsrs.LoginDenied) as info:
        await swsrs.device_login(
            oidc_relay.url, prompt=lambda a: approve_in_background(a, abort=True)
        )
    assert info.value.error == "access_denied"


async def test_expired_device_code(tmp_path: Path) -> None:
    idp = make_idp(tmp_path, "--interval", "1", "--device-ttl", "2")
    relay = start_relay(tmp_path, *oidc_flags(idp), no_auth=False)
    try:
        with pytest.raises(swsrs.LoginExpired) as info:
            await swsrs.device_login(relay.url, prompt=lambda a: None)  # nobody approves
        assert info.value.error == "expired_token"
    finally:
        relay.stop()
        idp.stop()


async def test_slow_down_adds_five_seconds(tmp_path: Path) -> None:
    idp = make_idp(tmp_path, "--interval", "1", "--slow-down")
    relay = start_relay(tmp_path, *oidc_flags(idp), no_auth=False)
    try:
        shown: list[swsrs.DeviceAuthorization] = []
        login = asyncio.create_task(swsrs.device_login(relay.url, prompt=shown.append))
        while not (shown and idp.stats()["device_polls"]):  # the first poll got slow_down
            assert not login.done()
            await asyncio.sleep(0.1)
        await asyncio.to_thread(approve_device, str(shown[0].verification_uri_complete))
        token = await login
        assert token.access_token
        polls = idp.stats()["device_polls"]
        assert len(polls) >= 2 and polls[1] - polls[0] >= 5.5  # interval 1 s + 5 s
    finally:
        relay.stop()
        idp.stop()


async def test_discover_on_no_auth_relay(relay: Relay) -> None:
    with pytest.raises(swsrs.AuthDisabled):
        await swsrs.discover(relay.url)
    with pytest.raises(swsrs.AuthDisabled):
        await swsrs.device_login(relay.url, prompt=lambda a: None)


def test_token_file_format(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "c.json")
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    store.save(Token("a", "Bearer", "r", expiry, "http://idp/token", "cli"))
    doc = json.loads(store.path.read_text())
    assert list(doc)[:4] == ["access_token", "token_type", "refresh_token", "expiry"]
    assert doc["expiry"] == expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert store.load() == Token("a", "Bearer", "r", expiry, "http://idp/token", "cli")
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temp file left behind
    zero = {"access_token": "a", "token_type": "Bearer", "expiry": "0001-01-01T00:00:00Z"}
    store.path.write_text(json.dumps(zero))
    loaded = store.load()
    assert loaded is not None and loaded.expiry is None and not loaded.expired()
    store.path.write_text("{not json")
    assert store.load() is None
    assert store.delete() and not store.delete()


# -- CLI -------------------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    return {**clean, "XDG_CONFIG_HOME": str(tmp_path / "config"), "CI": "true"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWSRS, *args], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def cli_login(env: dict[str, str], relay: Relay, *extra: str) -> str:
    """``swsrs auth`` in a subprocess, approved by the test as the user; returns its stderr."""
    proc = subprocess.Popen(
        [*SWSRS, "auth", "--relay", relay.url, *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    complete = None
    while line := proc.stderr.readline():
        lines.append(line)
        if line.startswith("(or open "):
            complete = line.strip()[len("(or open ") : -1]
            break
    assert complete is not None, "".join(lines)
    approve_device(complete)
    err = proc.stderr.read()  # not communicate(): it would skip what readline buffered
    assert proc.wait(60) == 0, "".join(lines) + err
    return "".join(lines) + err


def test_cli_auth_create_refresh_logout(oidc_relay: Relay, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    creds = tmp_path / "config" / "swsrs" / "credentials.json"

    printed = cli_login(env, oidc_relay)
    assert "open http://127.0.0.1:" in printed and "/device" in printed
    assert "enter the code: " in printed and "Waiting for approval" in printed
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    first = json.loads(creds.read_text())
    assert {"access_token", "token_type", "refresh_token", "expiry"} <= set(first)
    assert first["access_token"] not in printed

    r = run(env, "create", "--admin-url", oidc_relay.url, "--output", "env")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("SWSRS_SESSION=")

    # The saved token expires: the next command refreshes it and saves the new one.
    creds.write_text(json.dumps({**first, "expiry": "2000-01-01T00:00:00Z"}))
    r = run(env, "sessions", "list", "--admin-url", oidc_relay.url, "--output", "json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["sessions"]) >= 1
    second = json.loads(creds.read_text())
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["expiry"] > first["expiry"][:4]  # a real, future RFC 3339 time
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600

    r = run(env, "auth", "--logout")
    assert r.returncode == 0 and not creds.exists()
    r = run(env, "auth", "--logout")
    assert r.returncode == 0 and "not logged in" in r.stderr

    r = run(env, "create", "--admin-url", oidc_relay.url)
    assert r.returncode == 1 and "swsrs auth" in one_line(r)


def test_cli_explicit_credentials_and_dead_refresh(oidc_relay: Relay, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    path = tmp_path / "elsewhere.json"
    cli_login(env, oidc_relay, "--credentials", str(path), "--client-id", CLI_CLIENT)
    assert path.exists() and not (tmp_path / "config").exists()
    r = run(env, "create", "--admin-url", oidc_relay.url, "--credentials", str(path))
    assert r.returncode == 0, r.stderr

    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "expiry": "2000-01-01T00:00:00Z", "refresh_token": "x"}))
    r = run(env, "create", "--admin-url", oidc_relay.url, "--credentials", str(path))
    assert r.returncode == 1 and "swsrs auth --relay" in one_line(r)


def test_cli_token_flag_and_env(oidc_relay: Relay, idp: IdP, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    token = idp.client_credentials(["swsrs:session:create"])
    r = run(env, "create", "--admin-url", oidc_relay.url, "--oidc-token", token)
    assert r.returncode == 0, r.stderr
    r = run({**env, "SWSRS_OIDC_TOKEN": token}, "create", "--admin-url", oidc_relay.url)
    assert r.returncode == 0, r.stderr
    r = run({**env, "SWSRS_OIDC_TOKEN": token}, "sessions", "list", "--admin-url", oidc_relay.url)
    assert r.returncode == 1 and "403" in one_line(r) and "swsrs:session:read" in r.stderr
    r = run(env, "create", "--admin-url", oidc_relay.url, "--oidc-token", "garbage")
    assert r.returncode == 1 and "401" in one_line(r) and "garbage" not in r.stderr


def test_cli_auth_errors(relay: Relay, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    r = run(env, "auth")
    assert r.returncode == 2 and "--relay" in one_line(r)
    r = run(env, "auth", "--relay", relay.url)
    assert r.returncode == 1 and "no login needed" in one_line(r)
    r = run(env, "create", "--admin-url", relay.url)  # --no-auth relay: no token needed
    assert r.returncode == 0, r.stderr

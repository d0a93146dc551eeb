"""Corporate proxies: every client call through a real squid with Basic auth.

The test starts Debian's squid on a free 127.0.0.1 port with a private
configuration, password file and logs, and reads its access log to prove
what went through it (each tunnel is one ``CONNECT host:port`` line, written
when the tunnel closes). The relay and the IdP are plain http on 127.0.0.1,
so squid is allowed to ``CONNECT`` to any port, as a WebSocket needs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import swsrs
from swsrs.client.proxy import ProxyRefused, bypassed, proxy_for

from .conftest import Relay, free_port, oidc_flags, start_relay
from .oidc_idp import IdP, approve_device, node_missing_reason
from .pki import make_pki, start_tls_relay

SQUID = shutil.which("squid") or "/usr/sbin/squid"
NCSA = "/usr/lib/squid/basic_ncsa_auth"
HTPASSWD = shutil.which("htpasswd")
SWSRS = [sys.executable, "-m", "swsrs"]
USER, PASSWORD = "alice", "s3cret-pr0xy"
FORBIDDEN_PORT = 9  # squid answers 403 to a CONNECT there

pytestmark = pytest.mark.skipif(
    not (os.access(SQUID, os.X_OK) and os.access(NCSA, os.X_OK) and HTPASSWD),
    reason="squid (with basic_ncsa_auth) and htpasswd (apache2-utils) are not installed",
)


@dataclass
class Squid:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes]

    def url(self, password: str = PASSWORD) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}"

    def log(self) -> list[str]:
        path = self.directory / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def connects_since(self, mark: int, target: str, *, at_least: int = 1) -> list[str]:
        """The access log's ``CONNECT target`` lines after line ``mark`` (waits for
        ``at_least`` of them: squid writes a tunnel's line once it closes)."""
        deadline = time.monotonic() + 10
        while True:
            lines = [ln for ln in self.log()[mark:] if f" CONNECT {target} " in ln]
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def _squid_directory(tmp_path: Path) -> tuple[Path, str | None]:
    """Where squid keeps its files. As root squid runs as ``proxy``, which cannot enter
    pytest's private (0700) temporary tree: then a directory of its own in /tmp."""
    if os.geteuid() != 0:
        d = tmp_path / "squid"
        d.mkdir()
        return d, None
    user = "proxy"
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        user, entry = "nobody", pwd.getpwnam("nobody")
    d = Path(tempfile.mkdtemp(prefix="swsrs-squid-"))
    os.chown(d, entry.pw_uid, entry.pw_gid)
    return d, user


@pytest.fixture(scope="module")
def squid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Squid]:
    directory, user = _squid_directory(tmp_path_factory.mktemp("proxy"))
    subprocess.run([str(HTPASSWD), "-b", "-c", str(directory / "passwd"), USER, PASSWORD],
                   check=True, capture_output=True)  # fmt: skip
    os.chmod(directory / "passwd", 0o644)
    port = free_port()
    config = [
        f"http_port 127.0.0.1:{port}",
        f"pid_filename {directory}/squid.pid",
        f"access_log stdio:{directory}/access.log",
        f"cache_log {directory}/cache.log",
        f"coredump_dir {directory}",
        "cache_store_log none",
        "cache deny all",
        "logfile_rotate 0",
        "netdb_filename none",
        "pinger_enable off",
        "shutdown_lifetime 0 seconds",
        f"auth_param basic program {NCSA} {directory}/passwd",
        "auth_param basic realm swsrs-test",
        f"acl forbidden_port port {FORBIDDEN_PORT}",
        "acl authed proxy_auth REQUIRED",
        "http_access deny forbidden_port",
        "http_access allow authed",  # CONNECT to any port: a ws:// relay is not on 443
        "http_access deny all",
    ]
    if user:
        config.append(f"cache_effective_user {user}")
    (directory / "squid.conf").write_text("\n".join(config) + "\n")
    out = (directory / "squid.out").open("wb")
    proc = subprocess.Popen([SQUID, "-f", str(directory / "squid.conf"), "-N", "-d", "1"],
                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    s = Squid(port, directory, proc)
    try:
        deadline = time.monotonic() + 30
        while "Accepting HTTP Socket connections" not in (directory / "squid.out").read_text(
            errors="replace"
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("squid did not start:\n" + (directory / "squid.out").read_text())
            time.sleep(0.05)
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        if user:
            shutil.rmtree(directory, ignore_errors=True)


def cli_env(tmp_path: Path, proxy: str | None, no_proxy: str = "") -> dict[str, str]:
    """The environment with no proxy setting of its own, then ``proxy`` for http and https."""
    names = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWSRS_") and k.lower() not in names}  # fmt: skip
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), CI="true", NO_PROXY=no_proxy)
    if proxy:
        env.update(HTTPS_PROXY=proxy, HTTP_PROXY=proxy)
    return env


def run(env: dict[str, str], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SWSRS, *args], input=stdin, capture_output=True, timeout=60, env=env)


def one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    err = r.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def create(env: dict[str, str], relay: Relay, *extra: str) -> dict[str, str]:
    r = run(env, "create", "--admin-url", relay.url, "--output", "env", *extra)
    assert r.returncode == 0, r.stderr.decode()
    return dict(line.split("=", 1) for line in r.stdout.decode().splitlines())


# -- the CLI through the proxy ------------------------------------------------------------


def test_create_and_raw_tunnel_through_the_proxy(
    relay: Relay, squid: Squid, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, squid.url())
    target = f"127.0.0.1:{relay.port}"
    mark = len(squid.log())
    s = create(env, relay)
    # discovery (is auth on?) and the create: two tunnels
    assert len(squid.connects_since(mark, target, at_least=2)) >= 2

    mark = len(squid.log())
    up, down = os.urandom(300_000), os.urandom(200_000)
    common = ["raw", "--url", relay.ws_url, "--session", s["SWSRS_SESSION"], "--quiet"]
    responder = subprocess.Popen(
        [*SWSRS, *common, "--token", s["SWSRS_RESPONDER_TOKEN"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(responder.communicate(down, timeout=60)[0]))
    t.start()
    r = run(env, *common, "--token", s["SWSRS_INITIATOR_TOKEN"], "--role", "initiator", stdin=up)
    t.join(60)
    assert r.returncode == 0, r.stderr.decode()
    assert responder.returncode == 0, responder.stderr and responder.stderr.read()
    assert r.stdout == down and got == [up]
    lines = squid.connects_since(mark, target, at_least=2)
    assert len(lines) == 2 and all("TCP_TUNNEL/200" in ln and USER in ln for ln in lines), lines


def test_proxy_flag_and_sessions_commands(relay: Relay, squid: Squid, tmp_path: Path) -> None:
    env = cli_env(tmp_path, None)  # nothing in the environment: --proxy alone
    mark = len(squid.log())
    s = create(env, relay, "--proxy", squid.url())
    r = run(env, "sessions", "get", s["SWSRS_SESSION"], "--admin-url", relay.url,
            "--proxy", squid.url())  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert len(squid.connects_since(mark, f"127.0.0.1:{relay.port}", at_least=4)) >= 4
    # --proxy '' means no proxy, whatever the environment says
    mark = len(squid.log())
    create(cli_env(tmp_path, squid.url()), relay, "--proxy", "")
    time.sleep(0.5)
    assert squid.log()[mark:] == []


def test_wrong_proxy_password_is_one_line(relay: Relay, squid: Squid, tmp_path: Path) -> None:
    bad = "wr0ng-passw0rd"
    env = cli_env(tmp_path, squid.url(bad))
    r = run(env, "create", "--admin-url", relay.url)
    assert r.returncode == 1
    line = one_line(r)
    assert line == (  # an http:// relay: HTTP_PROXY is the one that counts, as for curl
        f"swsrs create: the proxy http://127.0.0.1:{squid.port} refused the connection: "
        "407 Proxy Authentication Required (check the user and password in HTTP_PROXY)"
    )

    # the data plane: no retrying for --reconnect's two minutes, one line, at once
    started = time.monotonic()
    r = run(cli_env(tmp_path, None), "raw", "--url", relay.ws_url, "--session", "s",
            "--token", "t", "--proxy", squid.url(bad))  # fmt: skip
    assert r.returncode == 1 and time.monotonic() - started < 20
    assert "407 Proxy Authentication Required (check the user and password in --proxy)" in (
        one_line(r)
    )
    for out in (r.stderr, r.stdout):
        assert bad.encode() not in out and PASSWORD.encode() not in out

    # a proxy that forbids the destination: 403, one line
    r = run(cli_env(tmp_path, squid.url()), "create", "--admin-url",
            f"http://127.0.0.1:{FORBIDDEN_PORT}")  # fmt: skip
    assert r.returncode == 1
    assert "refused the connection: 403 Forbidden" in one_line(r)


def test_no_proxy_is_respected(relay: Relay, squid: Squid, tmp_path: Path) -> None:
    for no_proxy in ("127.0.0.1", "localhost,127.0.0.0/8", f"127.0.0.1:{relay.port}"):
        mark = len(squid.log())
        s = create(cli_env(tmp_path, squid.url(), no_proxy=no_proxy), relay)
        r = run(cli_env(tmp_path, squid.url(), no_proxy=no_proxy), "sessions", "delete",
                s["SWSRS_SESSION"], "--admin-url", relay.url)  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()
        time.sleep(0.3)
        assert squid.log()[mark:] == [], no_proxy
    # a NO_PROXY for another port does not apply
    mark = len(squid.log())
    create(cli_env(tmp_path, squid.url(), no_proxy="127.0.0.1:1"), relay)
    assert squid.connects_since(mark, f"127.0.0.1:{relay.port}")


# -- auth (device flow and refresh) through the proxy ---------------------------------------


@pytest.fixture(scope="module")
def oidc_relay(idp: IdP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = start_relay(tmp_path_factory.mktemp("relay"), *oidc_flags(idp), no_auth=False)
    yield r
    r.stop()


@pytest.mark.skipif(node_missing_reason() is not None, reason=str(node_missing_reason()))
def test_auth_device_flow_and_refresh_through_the_proxy(
    oidc_relay: Relay, idp: IdP, squid: Squid, tmp_path: Path
) -> None:
    import json

    env = cli_env(tmp_path, squid.url())
    mark = len(squid.log())
    proc = subprocess.Popen([*SWSRS, "auth", "--relay", oidc_relay.url], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    complete = None
    while line := proc.stderr.readline():
        if line.startswith("(or open "):
            complete = line.strip()[len("(or open ") : -1]
            break
    assert complete is not None
    approve_device(complete)  # the user's browser: not through the proxy
    assert proc.wait(60) == 0, proc.stderr.read()
    idp_target = f"127.0.0.1:{idp.port}"
    assert squid.connects_since(mark, f"127.0.0.1:{oidc_relay.port}")  # discovery
    assert squid.connects_since(mark, idp_target)  # device authorization and token polls

    s = create(env, oidc_relay)
    assert s["SWSRS_SESSION"]

    creds = tmp_path / "config" / "swsrs" / "credentials.json"
    saved = json.loads(creds.read_text())
    creds.write_text(json.dumps({**saved, "expiry": "2000-01-01T00:00:00Z"}))
    mark = len(squid.log())
    r = run(env, "sessions", "list", "--admin-url", oidc_relay.url)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(creds.read_text())["access_token"] != saved["access_token"]
    assert squid.connects_since(mark, idp_target)  # the refresh went through the proxy


# -- the SDK ---------------------------------------------------------------------------------


async def test_sdk_through_the_proxy(relay: Relay, squid: Squid) -> None:
    mark = len(squid.log())
    async with swsrs.AdminClient(relay.url, proxy=squid.url()) as admin:
        s = await admin.create()
    a = await swsrs.accept(relay.ws_url, s.id, s.responder_token, proxy=squid.url())
    b = await swsrs.dial(relay.ws_url, s.id, s.initiator_token, proxy=squid.url())
    await b.send(b"ping")
    assert await a.recv() == b"ping"
    await a.close()
    await b.close()
    assert len(squid.connects_since(mark, f"127.0.0.1:{relay.port}", at_least=3)) >= 3

    with pytest.raises(ProxyRefused, match="407"):
        await swsrs.dial(relay.ws_url, s.id, s.initiator_token, proxy=squid.url("nope"))


async def test_sdk_https_and_wss_through_the_proxy(squid: Squid, tmp_path: Path) -> None:
    """CONNECT, then TLS inside the tunnel, verified against the relay's CA."""
    import ssl

    pki = make_pki(tmp_path / "pki")
    relay = start_tls_relay(tmp_path, pki)
    try:
        ca = ssl.create_default_context(cafile=str(pki.ca_cert))
        mark = len(squid.log())
        async with swsrs.AdminClient(relay.url, ssl=ca, proxy=squid.url()) as admin:
            s = await admin.create()
        a = await swsrs.accept(relay.url, s.id, s.responder_token, ssl=ca, proxy=squid.url())
        b = await swsrs.dial(relay.ws_url, s.id, s.initiator_token, ssl=ca, proxy=squid.url())
        await b.send(b"over tls, through the proxy")
        assert await a.recv() == b"over tls, through the proxy"
        await a.close()
        await b.close()
        lines = squid.connects_since(mark, f"127.0.0.1:{relay.port}", at_least=3)
        assert len(lines) >= 3, lines
        # without the CA the certificate check fails inside the tunnel too
        with pytest.raises(swsrs.RelayUnreachable, match="certificate verify failed"):
            await swsrs.dial(relay.ws_url, s.id, s.initiator_token, proxy=squid.url())
    finally:
        relay.stop()


# -- which proxy for which URL ----------------------------------------------------------------


def test_proxy_choice_follows_curl() -> None:
    env = {"HTTPS_PROXY": "http://up:1", "https_proxy": "http://low:2", "HTTP_PROXY": "plain:3"}
    p = proxy_for("wss://relay.example:443/x", env=env)
    assert p is not None and (p.host, p.port, p.source) == ("low", 2, "https_proxy")
    p = proxy_for("ws://relay.example", env=env)
    assert p is not None and (p.host, p.port, p.source) == ("plain", 3, "HTTP_PROXY")
    assert proxy_for("https://x", env={}) is None
    p = proxy_for("https://x", env={"ALL_PROXY": "http://all:4"})
    assert p is not None and p.host == "all"
    p = proxy_for("https://x", "http://u%40x:p%3Aw@flag", env=env)
    assert p is not None and (p.host, p.port, p.source) == ("flag", 1080, "--proxy")
    assert p.authorization == "Basic dUB4OnA6dw=="  # u@x:p:w
    assert proxy_for("https://x", "", env=env) is None
    # loopback is proxied unless NO_PROXY says otherwise; NO_PROXY applies to --proxy too
    assert proxy_for("http://127.0.0.1:8080", env=env) is not None
    assert proxy_for("http://127.0.0.1:8080", "http://f:1", env={"no_proxy": "127.0.0.1"}) is None

    assert bypassed("a.corp.example", 443, "corp.example")
    assert bypassed("corp.example", 443, ".corp.example")
    assert not bypassed("notcorp.example", 443, "corp.example")
    assert bypassed("10.1.2.3", 80, "192.168.0.0/16, 10.0.0.0/8")
    assert bypassed("::1", 80, "[::1]") and bypassed("::1", 80, "::1")
    assert bypassed("host", 8080, "host:8080") and not bypassed("host", 8081, "host:8080")
    assert bypassed("anything", 1, "*") and not bypassed("anything", 1, "")

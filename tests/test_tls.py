"""In-process TLS: ``https://`` and ``wss://`` on one port; the SDK and CLI trust a named CA."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import swsrs

from .pki import PKI, TLSRelay, make_pki, start_tls_relay
from .test_cli import raw_roundtrip

SWSRS = [sys.executable, "-m", "swsrs"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without SWSRS_* and without any trust-store override."""
    drop = ("SWSRS_", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


def run(
    *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*SWSRS, *args], capture_output=True, text=True, timeout=60,
        env=env if env is not None else clean_env(), **kw,
    )  # fmt: skip


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_relay(tmp_path: Path, pki: PKI) -> Iterator[TLSRelay]:
    r = start_tls_relay(tmp_path, pki)
    yield r
    r.stop()


async def test_sdk_over_https_and_wss(tls_relay: TLSRelay, pki: PKI) -> None:
    ca = ssl.create_default_context(cafile=str(pki.ca_cert))
    async with swsrs.AdminClient(tls_relay.url, ssl=ca) as admin:
        s = await admin.create()
        assert (await admin.get(s.id)).state == "pending"
    responder = await swsrs.accept(tls_relay.url, s.id, s.responder_token, ssl=ca)
    initiator = await swsrs.dial(tls_relay.ws_url, s.id, s.initiator_token, ssl=ca)
    try:
        await initiator.send(b"\x00over tls")
        assert await responder.recv() == b"\x00over tls"
        await responder.send("text back")
        assert await initiator.recv() == "text back"
    finally:
        await initiator.close()
        await responder.close()
    assert "listening on https://127.0.0.1:" in tls_relay.log()


async def test_sdk_refuses_an_untrusted_certificate(tls_relay: TLSRelay) -> None:
    # The system store (whatever SSL_CERT_FILE says here) never holds the fresh test CA.
    s = tls_relay.create()
    with pytest.raises(swsrs.RelayUnreachable, match=r"(?i)certificate"):
        async with swsrs.AdminClient(tls_relay.url) as admin:
            await admin.list()
    with pytest.raises(swsrs.RelayUnreachable, match=r"(?i)certificate"):
        await swsrs.dial(tls_relay.url, s["id"], s["initiator_token"])


def test_cli_trusts_ca_file_or_ssl_cert_file(tls_relay: TLSRelay, pki: PKI) -> None:
    url = tls_relay.url
    r = run("create", "--admin-url", url, "--output", "env")
    assert r.returncode == 1 and "certificate" in one_line_error(r).lower()
    r = run("create", "--admin-url", url, "--output", "env", "--ca-file", str(pki.ca_cert))
    assert r.returncode == 0 and r.stdout.startswith("SWSRS_SESSION="), r.stderr
    # No flag: the system trust store, which OpenSSL lets SSL_CERT_FILE replace.
    r = run("sessions", "list", "--admin-url", url, env=clean_env(SSL_CERT_FILE=str(pki.ca_cert)))
    assert r.returncode == 0 and r.stdout.count("\n") == 2, r.stderr
    sid = r.stdout.splitlines()[1].split()[0]
    r = run("sessions", "get", "--admin-url", url, "--ca-file", str(pki.ca_cert), sid)
    assert r.returncode == 0 and sid in r.stdout
    r = run("sessions", "delete", "--admin-url", url, "--ca-file", str(pki.ca_cert), sid)
    assert r.returncode == 0, r.stderr


def test_cli_raw_over_wss(tls_relay: TLSRelay, pki: PKI) -> None:
    raw_roundtrip(
        tls_relay,
        os.urandom(256 * 1024),
        receiver_args=("--ca-file", str(pki.ca_cert)),
        receiver_env=clean_env(),
        sender_url=tls_relay.ws_url,
        sender_env=clean_env(SSL_CERT_FILE=str(pki.ca_cert)),
    )


@pytest.mark.parametrize(
    "cmd",
    [
        ["create", "--admin-url", "https://127.0.0.1:9"],
        ["sessions", "list", "--admin-url", "https://127.0.0.1:9"],
        ["sessions", "get", "--admin-url", "https://127.0.0.1:9", "x"],
        ["sessions", "delete", "--admin-url", "https://127.0.0.1:9", "x"],
        ["raw", "--url", "wss://127.0.0.1:9", "--session", "s", "--token", "t"],
        [
            "tcp-dial",
            "--url",
            "wss://127.0.0.1:9",
            "--session",
            "s",
            "--token",
            "t",
            "--target",
            "127.0.0.1:9",
        ],
        ["tcp-listen", "--url", "wss://127.0.0.1:9", "--session", "s", "--token", "t"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_bad_ca_file_is_a_usage_error(cmd: list[str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", garbage):
        r = run(*cmd, "--ca-file", str(path))
        assert r.returncode == 2, r.stderr
        line = one_line_error(r)
        assert "--ca-file" in line and str(path) in line


def test_bad_tls_combinations_exit_2(tmp_path: Path, pki: PKI) -> None:
    other = make_pki(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN NOTHING-----\nxx\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    cert, key = str(pki.server_cert), str(pki.server_key)
    cases = [
        (["--tls-cert", cert], "--tls-key"),
        (["--tls-key", key], "--tls-cert"),
        (["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", key], "cannot read --tls-cert"),
        (["--tls-cert", cert, "--tls-key", str(tmp_path / "nope.key")], "cannot read --tls-key"),
        (["--tls-cert", str(garbage), "--tls-key", key], "no PEM certificate"),
        (["--tls-cert", cert, "--tls-key", str(garbage)], "no PEM private key"),
        (["--tls-cert", key, "--tls-key", key], "no PEM certificate"),
        (["--tls-cert", str(broken), "--tls-key", key], "cannot load"),
        (["--tls-cert", cert, "--tls-key", str(other.server_key)], "does not match"),
    ]
    for args, needle in cases:
        r = run("serve", "--no-auth", "--addr", "127.0.0.1:0", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in one_line_error(r), (args, r.stderr)
    r = run(
        "serve", "--no-auth", "--addr", "127.0.0.1:0",
        env=clean_env(SWSRS_TLS_CERT=cert, SWSRS_TLS_KEY=str(other.server_key)),
    )  # fmt: skip
    assert r.returncode == 2 and "does not match" in one_line_error(r)

"""``swsrs serve`` flag and environment handling: bad input exits 2 with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest

from swsrs.durations import format_duration, parse_duration
from swsrs.errors import ConfigError
from swsrs.server.config import load, parse_addr

from .conftest import free_port


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    return subprocess.run(
        [sys.executable, "-m", "swsrs", "serve", *args],
        capture_output=True, text=True, timeout=30, env={**clean, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        ([], {}, "issuer"),
        (["--no-auth", "--session-ttl", "10"], {}, "--session-ttl"),
        (["--no-auth", "--peer-wait", "abc"], {}, "--peer-wait"),
        (["--no-auth", "--reap-interval", "-1s"], {}, "--reap-interval"),
        (["--no-auth", "--tls-cert", "c.pem"], {}, "--tls-key"),
        (["--no-auth", "--max-frame-size", "0"], {}, "--max-frame-size"),
        (["--no-auth", "--max-frame-size", "abc"], {}, "--max-frame-size"),
        (["--no-auth", "--addr", "nowhere"], {}, "--addr"),
        (["--no-auth", "--public-base-url", "ftp://x"], {}, "--public-base-url"),
        ([], {"SWSRS_NO_AUTH": "maybe"}, "SWSRS_NO_AUTH"),
        ([], {"SWSRS_NO_AUTH": "1", "SWSRS_SESSION_TTL": "forever"}, "--session-ttl"),
    ],
)
def test_bad_configuration_exits_2(args: list[str], env: dict[str, str], needle: str) -> None:
    r = serve(*args, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_env_used_and_flags_win() -> None:
    cfg = load({}, {"SWSRS_NO_AUTH": "true", "SWSRS_ADDR": "127.0.0.1:9", "SWSRS_PEER_WAIT": "90s"})
    assert (cfg.host, cfg.port, cfg.peer_wait, cfg.no_auth) == ("127.0.0.1", 9, 90.0, True)
    cfg = load(
        {"addr": "127.0.0.1:10", "peer_wait": "1m30s", "no_auth": True}, {"SWSRS_ADDR": ":9"}
    )
    assert (cfg.port, cfg.peer_wait, cfg.session_ttl, cfg.max_frame_size) == (10, 90.0, 3600.0, -1)
    cfg = load({"no_auth": True, "public_base_url": "https://r.example.com/"}, {})
    assert cfg.public_base_url == "wss://r.example.com"


def test_addr_from_env_is_listened_on() -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    env = {**clean, "SWSRS_ADDR": f"127.0.0.1:{port}", "SWSRS_NO_AUTH": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "swsrs", "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert p.stderr is not None
        for line in p.stderr:
            if "listening on" in line:
                assert f"127.0.0.1:{port}" in line
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.read() == b"ok"
    finally:
        p.terminate()
        assert p.wait(10) == 0


def test_port_in_use_is_one_line() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as s:
        r = serve("--no-auth", "--addr", f"127.0.0.1:{s.getsockname()[1]}")
    assert r.returncode == 1
    assert "cannot listen" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("text", "secs"),
    [("90s", 90), ("2m", 120), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), ("0", 0)],
)
def test_parse_duration(text: str, secs: float) -> None:
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("text", ["", "10", "abc", "1x", "m", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(120) == "2m0s"
    assert format_duration(3600) == "1h0m0s"
    assert format_duration(0.25) == "250ms"


def test_parse_addr() -> None:
    assert parse_addr(":8080") == (None, 8080)
    assert parse_addr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_addr("[::1]:80") == ("::1", 80)
    for bad in ("8080", "host:", "h:99999"):
        with pytest.raises(ConfigError):
            parse_addr(bad)

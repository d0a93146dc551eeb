"""``swsrs serve --config FILE`` and ``--print-config``, through the real CLI."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from swsrs.cli.main import build_parser
from swsrs.server.config import load
from swsrs.server.config_file import NOT_KEYS, Key, keys_of, read

from .conftest import start_relay

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "swsrs.toml"


def swsrs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWSRS_")}
    return subprocess.run(
        [sys.executable, "-m", "swsrs", "serve", *args],
        capture_output=True, text=True, timeout=30, env={**clean, **(env or {})},
    )  # fmt: skip


def serve_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser().parse_args(["serve"]).serve_parser
    return parser


def serve_keys() -> dict[str, Key]:
    return keys_of(serve_parser())


def printed(*args: str, env: dict[str, str] | None = None) -> str:
    r = swsrs(*args, "--print-config", env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


# Every setting away from its default (so a key the printer drops or mangles shows).
EVERY_FLAG = [
    "--addr", "127.0.0.1:9999", "--oidc-issuer", "https://idp.example.com/",
    "--oidc-audience", "swsrs", "--oidc-client-id", "cli", "--session-ttl", "2h",
    "--peer-wait", "90s", "--reap-interval", "1m", "--public-base-url", "https://r.example.com",
    "--allowed-origins", "app.example.com,*.example.org", "--max-frame-size", "1048576",
    "--header-timeout", "5s", "--keepalive-timeout", "30s", "--max-conns", "5000",
    "--attach-rate", "50/1s", "--failed-attach-limit", "10/2m", "--session-bandwidth", "10MiB",
    "--max-sessions-per-subject", "7", "--max-admin-body", "32KiB",
    "--trusted-proxies", "10.0.0.0/8,127.0.0.1", "--store", "sqlite:///var/lib/swsrs/s.db",
    "--node-id", "relay-a", "--advertise-addr", "relay-a.internal:8080", "--workers", "3",
    "--demo", "--log-level", "debug", "--log-format", "json", "--metrics-addr", "127.0.0.1:9464",
]  # fmt: skip


def test_every_flag_is_a_key_and_its_variable_is_named_after_it() -> None:
    keys = serve_keys()
    serve = serve_parser()
    flags = {
        o[2:].replace("-", "_")
        for a in serve._actions
        for o in a.option_strings
        if o.startswith("--") and a.dest not in NOT_KEYS
    }
    assert set(keys) == flags
    for a in serve._actions:  # the environment convention --config relies on: SWSRS_<KEY>
        if a.dest in keys:
            assert f"SWSRS_{a.dest.upper()}" in (a.help or ""), a.dest


def test_print_config_round_trips(tmp_path: Path) -> None:
    first = printed(*EVERY_FLAG)
    data = tomllib.loads(first)
    assert data["peer_wait"] == "1m30s" and data["allowed_origins"] == [
        "app.example.com",
        "*.example.org",
    ]
    assert data["demo"] is True and data["max_conns"] == 5000 and data["workers"] == 3
    flags_given = {k for k in serve_keys() if k != "no_auth" and k not in ("tls_cert", "tls_key")}
    ping_keys = {"ping_interval", "ping_timeout", "idle_timeout"}  # defaults, not in EVERY_FLAG
    assert flags_given - ping_keys <= set(data), flags_given - set(data)
    f = tmp_path / "swsrs.toml"
    f.write_text(first)
    assert printed("--config", str(f)) == first
    assert printed(env={"SWSRS_CONFIG": str(f)}) == first
    # and the file gives the very configuration the flags gave
    keys = serve_keys()
    args = build_parser().parse_args(["serve", *EVERY_FLAG])
    from_flags = load(vars(args), {})
    from_file = load({}, {}, read(str(f), keys))
    assert from_file == from_flags


def test_defaults_round_trip(tmp_path: Path) -> None:
    first = printed("--no-auth")
    assert "# node_id: not set" in first  # made up at each start: never pinned
    f = tmp_path / "swsrs.toml"
    f.write_text(first)
    assert printed("--config", str(f)) == first


def test_secrets_are_masked(tmp_path: Path) -> None:
    out = printed("--no-auth", "--store", "redis://relay:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in out
    assert 'store = "redis://relay:***@127.0.0.1:6379/0"' in out
    f = tmp_path / "swsrs.toml"
    f.write_text(out)
    assert printed("--config", str(f)) == out  # the masked file still loads


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "swsrs.toml"
    f.write_text('no_auth = true\npeer_wait = "1m"\nsession_ttl = "3h"\nreap_interval = "10s"\n'
                 "demo = true\n")  # fmt: skip
    env = {"SWSRS_PEER_WAIT": "2m", "SWSRS_SESSION_TTL": "4h", "SWSRS_DEMO": "0"}
    data = tomllib.loads(printed("--config", str(f), "--peer-wait", "3m", env=env))
    assert data["peer_wait"] == "3m0s"  # flag over environment over file
    assert data["session_ttl"] == "4h0m0s"  # environment over file
    assert data["reap_interval"] == "10s"  # file over default
    assert data["demo"] is False  # SWSRS_DEMO=0 over the file's true
    assert data["keepalive_timeout"] == "1m15s"  # the default


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_unknown_key_is_one_line_naming_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "swsrs.toml"
    f.write_text('no_auth = true\npeer_wiat = "2m"\n')
    line = one_line(swsrs("--config", str(f)))
    assert str(f) in line and "'peer_wiat'" in line and "did you mean 'peer_wait'" in line
    f.write_text("no_auth = true\n[limits]\nmax_conns = 10\n")  # no tables
    line = one_line(swsrs("--config", str(f), "--print-config"))
    assert str(f) in line and "'limits'" in line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('peer_wait = "soon"', "peer_wait"),
        ("peer_wait = 90", "peer_wait"),  # a duration needs its unit
        ("workers = true", "workers"),
        ('workers = "many"', "workers"),
        ('max_conns = "lots"', "max_conns"),
        ("allowed_origins = [1, 2]", "allowed_origins"),
        ('allowed_origins = ["http://x"]', "allowed_origins"),
        ('store = "postgres://db"', "store"),
        ('tls_cert = "cert.pem"', "tls_cert"),  # without tls_key
        ('demo = "yes"', "demo"),
        ("addr = 8080", "addr"),
        ('metrics_addr = "nowhere"', "metrics_addr"),
        ('attach_rate = "fast"', "attach_rate"),
    ],
)
def test_bad_value_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "relay.toml"
    f.write_text(f"no_auth = true\n{text}\n")
    line = one_line(swsrs("--config", str(f)))
    assert line.startswith(f"swsrs serve: {f}: ") and re.search(rf"\b{key}\b", line), line


def test_bad_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "swsrs.toml"
    f.write_text("no_auth = true\npeer_wait = \n")
    line = one_line(swsrs("--config", str(f)))
    assert str(f) in line and "not valid TOML" in line and "line 2" in line
    line = one_line(swsrs("--config", str(tmp_path / "missing.toml")))
    assert "missing.toml" in line


def test_a_bad_value_from_the_environment_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    f = tmp_path / "swsrs.toml"
    f.write_text('no_auth = true\npeer_wait = "1m"\n')
    line = one_line(swsrs("--config", str(f), env={"SWSRS_PEER_WAIT": "soon"}))
    assert str(f) not in line and "--peer-wait" in line


def test_a_relay_runs_on_its_config_file(tmp_path: Path) -> None:
    f = tmp_path / "swsrs.toml"
    f.write_text("no_auth = true\ndemo = true\nmax_admin_body = 100\n")
    relay = start_relay(tmp_path, "--config", str(f), no_auth=False)
    try:
        status, _, _ = relay.request("GET", "/demo/chat.html")
        assert status == 200
        status, _, _ = relay.request("POST", "/admin/sessions", body=b"{}" + b" " * 200,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        assert status == 413
        assert relay.create()["id"]
    finally:
        assert relay.stop() == 0


def test_the_example_config_loads_with_every_key(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    r = swsrs("--config", str(EXAMPLE), "--print-config")
    assert r.returncode == 0, r.stderr
    keys = serve_keys()
    for key in keys:  # every key is shown, set or in a comment
        assert re.search(rf"^#? ?{key} = ", text, re.M), key
    # each commented-out setting is valid once uncommented (tls_cert and tls_key together)
    settings = re.findall(r"^# ?((\w+) = .*)$", text, re.M)
    tls = "\n".join(line for line, key in settings if key.startswith("tls_"))
    for line in [tls] + [line for line, key in settings if not key.startswith("tls_")]:
        f = tmp_path / "one.toml"
        f.write_text(f'{line}\noidc_issuer = "https://idp.example.com/"\n')
        r = swsrs("--config", str(f), "--print-config")
        assert r.returncode == 0, (line, r.stderr)

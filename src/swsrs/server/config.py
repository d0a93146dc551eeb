"""``swsrs serve`` configuration: flags over environment over defaults, validated once.

Every problem is a :class:`~swsrs.errors.ConfigError` with a one-line
reason; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swsrs.durations import parse_duration
from swsrs.errors import ConfigError
from swsrs.server.limits import LimitsConfig, load_limits
from swsrs.server.origins import pattern_problem
from swsrs.urls import to_ws_base

_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n", ""}
_NODE_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


def default_node_id() -> str:
    """``<hostname>-<6 random hex digits>``: unique per process, even for two relays on
    one host with the same port, and readable in logs and in Redis."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "swsrs"
    return f"{host}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str | None = None  # None: every interface, like Go's ":8080"
    port: int = 8080
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_client_id: str | None = None
    session_ttl: float = 3600.0
    peer_wait: float = 120.0
    reap_interval: float = 30.0
    ping_interval: float = 30.0  # keepalive (dataplane/liveness.py); 0: never
    ping_timeout: float = 20.0
    idle_timeout: float = 0.0  # 0: tunnels may idle for ever
    drain_timeout: float = 30.0  # on SIGTERM: how long peers get to leave after our close
    public_base_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    no_auth: bool = False
    max_frame_size: int = -1
    workers: int = 1
    store: str = "memory"
    node_id: str = ""  # "" until load() derives one: hostname-random
    advertise_addr: str | None = None  # host:port where other nodes reach this one
    log_level: str = "info"
    demo: bool = False  # serve the chat example at /demo/chat.html
    limits: LimitsConfig = field(default_factory=LimitsConfig)  # abuse limits (limits.py)
    metrics_addr: tuple[str | None, int] | None = None  # --metrics-addr: None = no metrics
    log_format: str = "text"  # text or json (one object per line)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def parse_addr(text: str) -> tuple[str | None, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` → (host or None for all interfaces, port)."""
    t = text.strip()
    host, sep, port_s = t.rpartition(":")
    if not sep or not port_s.isdigit():
        raise ConfigError(f"invalid --addr {text!r} (want host:port or :port)")
    port = int(port_s)
    if port > 65535:
        raise ConfigError(f"invalid --addr {text!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), port


def parse_bool(name: str, text: str) -> bool:
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"invalid {name} {text!r} (want true or false)")


def _duration(name: str, text: str, *, allow_zero: bool = False) -> float:
    try:
        secs = parse_duration(text)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if secs < 0 or (secs == 0 and not allow_zero):
        raise ConfigError(f"{name} must be positive, got {text!r}")
    return secs


def load(
    flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, str] | None = None
) -> ServerConfig:
    """Build the configuration from parsed flags (``None`` = not given), the environment
    and a config file's values by flag name (``config_file.read``), in that order."""
    file = file or {}

    def pick(flag: str, var: str) -> str | None:
        v = flags.get(flag)
        if v is not None:
            return str(v)
        e = env.get(var)
        if e not in (None, ""):
            return e
        f = file.get(flag)
        return f if f not in (None, "") else None

    def switch(flag: str, var: str) -> bool:  # a store_true flag, else its variable, else file
        if flags.get(flag):
            return True
        if env.get(var, "") != "":
            return parse_bool(var, env[var])
        return parse_bool(flag, file.get(flag, ""))

    demo = switch("demo", "SWSRS_DEMO")
    no_auth = switch("no_auth", "SWSRS_NO_AUTH")

    host, port = parse_addr(pick("addr", "SWSRS_ADDR") or ":8080")
    issuer = pick("oidc_issuer", "SWSRS_OIDC_ISSUER")
    if not no_auth and not issuer:
        raise ConfigError(
            "an OIDC issuer is required (--oidc-issuer or SWSRS_OIDC_ISSUER); "
            "use --no-auth only for development"
        )
    if issuer and not issuer.startswith(("https://", "http://")):
        raise ConfigError(f"--oidc-issuer must be an http(s) URL, got {issuer!r}")

    ttl = _duration("--session-ttl", pick("session_ttl", "SWSRS_SESSION_TTL") or "1h")
    peer_wait = _duration("--peer-wait", pick("peer_wait", "SWSRS_PEER_WAIT") or "2m")
    reap = _duration("--reap-interval", pick("reap_interval", "SWSRS_REAP_INTERVAL") or "30s")
    ping_interval = _duration("--ping-interval", pick("ping_interval", "SWSRS_PING_INTERVAL")
                              or "30s", allow_zero=True)  # fmt: skip
    ping_timeout = _duration("--ping-timeout", pick("ping_timeout", "SWSRS_PING_TIMEOUT") or "20s")
    drain = _duration("--drain-timeout", pick("drain_timeout", "SWSRS_DRAIN_TIMEOUT") or "30s",
                      allow_zero=True)  # fmt: skip
    idle_timeout = _duration("--idle-timeout", pick("idle_timeout", "SWSRS_IDLE_TIMEOUT") or "0",
                             allow_zero=True)  # fmt: skip

    base = pick("public_base_url", "SWSRS_PUBLIC_BASE_URL")
    if base is not None:
        try:
            base = to_ws_base(base)
        except ConfigError:
            raise ConfigError(
                f"--public-base-url must be an http(s) or ws(s) URL, got {base!r}"
            ) from None

    origins_raw = pick("allowed_origins", "SWSRS_ALLOWED_ORIGINS") or ""
    origins = tuple(o.strip().lower() for o in origins_raw.split(",") if o.strip())
    for o in origins:
        if (problem := pattern_problem(o)) is not None:
            raise ConfigError(f"--allowed-origins: {problem}")

    cert = pick("tls_cert", "SWSRS_TLS_CERT")
    key = pick("tls_key", "SWSRS_TLS_KEY")
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert and --tls-key must be given together")

    mfs_raw = pick("max_frame_size", "SWSRS_MAX_FRAME_SIZE") or "-1"
    try:
        mfs = int(mfs_raw)
    except ValueError:
        raise ConfigError(f"--max-frame-size must be an integer, got {mfs_raw!r}") from None
    if mfs == 0 or mfs < -1:
        raise ConfigError("--max-frame-size must be -1 (unlimited) or a positive byte count")

    workers_raw = (pick("workers", "SWSRS_WORKERS") or "1").strip().lower()
    if workers_raw == "auto":
        workers = os.cpu_count() or 1
    elif workers_raw.isdigit() and 1 <= int(workers_raw) <= 256:
        workers = int(workers_raw)
    else:
        raise ConfigError(f"--workers must be a number from 1 to 256 or auto, got {workers_raw!r}")
    if workers > 1 and cert:
        raise ConfigError(
            "--workers above 1 cannot be combined with --tls-cert: a TLS connection cannot be "
            "handed between processes; terminate TLS in front of the relay or use one worker"
        )

    store = (pick("store", "SWSRS_STORE") or "memory").strip()
    if store.startswith("sqlite://"):
        if not store[len("sqlite://") :]:
            raise ConfigError(
                "--store sqlite:// needs a file path, e.g. sqlite:///var/lib/swsrs.db"
            )
    elif store.startswith(("redis://", "rediss://")):
        from swsrs.server.stores.redis import split_url

        try:
            split_url(store)
        except ValueError as exc:
            raise ConfigError(f"--store: {exc}") from None
    elif store != "memory":
        raise ConfigError(
            f"--store must be memory, sqlite://PATH or redis://host:port/db, got {store!r}"
        )

    node_id = pick("node_id", "SWSRS_NODE_ID") or default_node_id()
    if not _NODE_ID.match(node_id):
        raise ConfigError(
            f"--node-id must be 1-128 characters of letters, digits and ._:@-, got {node_id!r}"
        )

    advertise = pick("advertise_addr", "SWSRS_ADVERTISE_ADDR")
    if advertise is not None:
        host_part, sep, port_part = advertise.rpartition(":")
        if not sep or not host_part or not port_part.isdigit() or not 0 < int(port_part) < 65536:
            raise ConfigError(f"--advertise-addr must be host:port, got {advertise!r}")

    log_level = (pick("log_level", "SWSRS_LOG_LEVEL") or "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level must be debug, info, warning or error, got {log_level!r}")

    metrics_raw = pick("metrics_addr", "SWSRS_METRICS_ADDR")
    metrics_addr = None
    if metrics_raw is not None:
        try:
            metrics_addr = parse_addr(metrics_raw)
        except ConfigError:
            raise ConfigError(
                f"--metrics-addr must be host:port or :port, got {metrics_raw!r}"
            ) from None
        if metrics_addr[1] == port and metrics_addr[1] != 0:
            raise ConfigError("--metrics-addr must not be the relay's own port")

    log_format = (pick("log_format", "SWSRS_LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"--log-format must be text or json, got {log_format!r}")

    return ServerConfig(
        host=host,
        port=port,
        oidc_issuer=issuer,
        oidc_audience=pick("oidc_audience", "SWSRS_OIDC_AUDIENCE"),
        oidc_client_id=pick("oidc_client_id", "SWSRS_OIDC_CLIENT_ID"),
        session_ttl=ttl,
        peer_wait=peer_wait,
        reap_interval=reap,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        idle_timeout=idle_timeout,
        drain_timeout=drain,
        public_base_url=base,
        allowed_origins=origins,
        tls_cert=cert,
        tls_key=key,
        no_auth=no_auth,
        max_frame_size=mfs,
        workers=workers,
        store=store,
        node_id=node_id,
        advertise_addr=advertise,
        log_level=log_level,
        demo=demo,
        limits=load_limits(pick),
        metrics_addr=metrics_addr,
        log_format=log_format,
    )

"""``swsrs serve``: flags → :class:`~swsrs.server.config.ServerConfig` → the relay."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from swsrs.cli.output import error_line
from swsrs.errors import ConfigError, StoreError

DESCRIPTION = """\
Run the relay: the admin API (/admin/sessions), the data plane (/relay/{id}),
discovery (/.well-known/swsrs-config), /healthz and /readyz, all on one port.
Every flag can also be set with the environment variable shown, or in the
--config file as its name in snake_case (--peer-wait: peer_wait = "2m");
flags win over the environment, which wins over the file.
Durations use Go form: 90s, 2m, 1h30m."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the relay server",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a(
        "--addr",
        metavar="ADDR",
        help="listen address host:port or :port (SWSRS_ADDR, default :8080)",
    )
    a(
        "--oidc-issuer",
        metavar="URL",
        help="OIDC issuer URL (SWSRS_OIDC_ISSUER); required unless --no-auth",
    )
    a("--oidc-audience", metavar="AUD", help="expected aud claim (SWSRS_OIDC_AUDIENCE)")
    a("--oidc-client-id", metavar="ID", help="client_id_hint in discovery (SWSRS_OIDC_CLIENT_ID)")
    a("--session-ttl", metavar="DUR", help="session lifetime (SWSRS_SESSION_TTL, default 1h)")
    a(
        "--peer-wait",
        metavar="DUR",
        help="how long a peer waits for its counterpart (SWSRS_PEER_WAIT, default 2m)",
    )
    a(
        "--reap-interval",
        metavar="DUR",
        help="expiry sweep interval (SWSRS_REAP_INTERVAL, default 30s)",
    )
    a("--ping-interval", metavar="DUR",
      help="ping a peer silent this long (SWSRS_PING_INTERVAL, default 30s; 0: never)")  # fmt: skip
    a("--ping-timeout", metavar="DUR",
      help="cut a peer that does not answer a ping within this (SWSRS_PING_TIMEOUT, "
      "default 20s)")  # fmt: skip
    a("--drain-timeout", metavar="DUR",
      help="on SIGTERM, how long peers get to leave after the relay's close (they reconnect "
      "elsewhere or to the restarted relay) (SWSRS_DRAIN_TIMEOUT, default 30s)")  # fmt: skip
    a("--idle-timeout", metavar="DUR",
      help="end a tunnel that carried no data this long (SWSRS_IDLE_TIMEOUT, default 0 = "
      "never)")  # fmt: skip
    a(
        "--public-base-url",
        metavar="URL",
        help="ws(s) base for initiator_url/responder_url (SWSRS_PUBLIC_BASE_URL)",
    )
    a(
        "--allowed-origins",
        metavar="LIST",
        help="comma-separated Origin host patterns (SWSRS_ALLOWED_ORIGINS)",
    )
    a(
        "--tls-cert",
        metavar="FILE",
        help="TLS certificate chain, PEM (SWSRS_TLS_CERT); needs --tls-key",
    )
    a("--tls-key", metavar="FILE", help="TLS private key, PEM (SWSRS_TLS_KEY); needs --tls-cert")
    a(
        "--no-auth",
        action="store_true",
        default=None,
        help="DEVELOPMENT ONLY: no admin auth (SWSRS_NO_AUTH)",
    )
    a(
        "--max-frame-size",
        metavar="BYTES",
        help="cap on a data-plane message, -1 = unlimited (SWSRS_MAX_FRAME_SIZE)",
    )
    a(
        "--header-timeout",
        metavar="DUR",
        help="close a connection that has not sent a whole request head in this time "
        "(SWSRS_HEADER_TIMEOUT, default 10s)",
    )
    a(
        "--keepalive-timeout",
        metavar="DUR",
        help="close an idle keep-alive HTTP connection after this (SWSRS_KEEPALIVE_TIMEOUT, "
        "default 75s)",
    )
    a(
        "--max-conns",
        metavar="N",
        help="open client connections at most; beyond it new ones are refused at once "
        "(SWSRS_MAX_CONNS, default auto: what the file-descriptor limit allows)",
    )
    a(
        "--attach-rate",
        metavar="N/DUR",
        help="attach attempts per client address, e.g. 20/1s; 0 = unlimited "
        "(SWSRS_ATTACH_RATE, default 100/1s)",
    )
    a(
        "--failed-attach-limit",
        metavar="N/DUR",
        help="attaches with a wrong token or an unknown session per client address before "
        "429, e.g. 20/1m; 0 = unlimited (SWSRS_FAILED_ATTACH_LIMIT, default 20/1m)",
    )
    a(
        "--session-bandwidth",
        metavar="BYTES",
        help="bytes per second each direction of a session may carry, e.g. 10MiB; 0 = "
        "unlimited (SWSRS_SESSION_BANDWIDTH, default 0)",
    )
    a(
        "--max-sessions-per-subject",
        metavar="N",
        help="live sessions one OIDC subject may hold; 0 = unlimited "
        "(SWSRS_MAX_SESSIONS_PER_SUBJECT, default 1000)",
    )
    a(
        "--max-admin-body",
        metavar="BYTES",
        help="largest admin API request body (SWSRS_MAX_ADMIN_BODY, default 64KiB)",
    )
    a(
        "--trusted-proxies",
        metavar="CIDRS",
        help="comma-separated proxies whose X-Forwarded-For/Forwarded name the client "
        "(SWSRS_TRUSTED_PROXIES, default none: the headers are ignored)",
    )
    a(
        "--store",
        metavar="URL",
        help="where sessions live: memory (default), sqlite:///path/to/sessions.db, which "
        "survives restarts, or redis://host:port/db (rediss:// for TLS), shared by several "
        "relay nodes (SWSRS_STORE)",
    )
    a(
        "--node-id",
        metavar="ID",
        help="this relay's name among nodes sharing a store (SWSRS_NODE_ID, "
        "default <hostname>-<random>)",
    )
    a(
        "--advertise-addr",
        metavar="HOST:PORT",
        help="where the other nodes sharing a store reach this one, for peers that a "
        "balancer sends to the wrong node (SWSRS_ADVERTISE_ADDR, default the bound "
        "address, or the hostname when bound to every interface)",
    )
    a(
        "--workers",
        metavar="N",
        help="processes serving the data plane: a number or auto = one per core "
        "(SWSRS_WORKERS, default 1); both peers of a session always meet in one process",
    )
    a(
        "--demo",
        action="store_true",
        default=None,
        help="also serve the two-party chat example at /demo/chat.html (SWSRS_DEMO)",
    )
    a(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (SWSRS_LOG_LEVEL, default info)",
    )
    a(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or as one JSON object each (SWSRS_LOG_FORMAT, default text)",
    )
    a(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, a listener of its own "
        "(SWSRS_METRICS_ADDR, default off)",
    )
    a(
        "--config",
        metavar="FILE",
        help="read settings from this TOML file, keys as the long flags in snake_case "
        '(peer_wait = "2m"); flags and the environment win over it (SWSRS_CONFIG)',
    )
    a(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML, secrets masked, and exit",
    )
    p.set_defaults(func=run, serve_parser=p)


def run(args: argparse.Namespace) -> int:
    from swsrs.server import config_file, tls

    keys = config_file.keys_of(args.serve_parser)
    try:
        cfg, file = config_file.load(vars(args), os.environ, keys)
        if args.print_config:
            print(config_file.render(cfg, keys, vars(args), os.environ, file), end="")
            return 0
        if cfg.tls_cert and cfg.tls_key:
            tls.server_context(cfg.tls_cert, cfg.tls_key)  # bad files: exit 2 before binding
    except ConfigError as exc:
        error_line("swsrs serve", str(exc))
        return 2
    from swsrs.server.logs import setup_logging

    setup_logging(cfg.log_level, fmt=cfg.log_format)
    from swsrs.server.app import serve

    try:
        return asyncio.run(serve(cfg))
    except OSError as exc:
        addr = args.addr or os.environ.get("SWSRS_ADDR") or ":8080"
        error_line("swsrs serve", f"cannot listen on {addr}: {exc.strerror or exc}")
        return 1
    except StoreError as exc:
        error_line("swsrs serve", str(exc))
        return 1
    except KeyboardInterrupt:
        return 0

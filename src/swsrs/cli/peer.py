"""Peer commands: ``tcp-listen``, ``tcp-dial``, ``raw``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from swsrs.adapters import stdio, tcp
from swsrs.cli import tls
from swsrs.client.connection import Connection, connect
from swsrs.errors import ConfigError


def _peer_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", metavar="URL", help="relay URL, http(s) or ws(s) (SWSRS_URL)")
    p.add_argument("--session", metavar="ID", help="session id (SWSRS_SESSION)")
    p.add_argument("--token", metavar="TOKEN", help="this slot's token (SWSRS_TOKEN)")
    p.add_argument(
        "--role",
        choices=["initiator", "responder"],
        default=None,
        help="slot to attach to (default responder)",
    )
    tls.add_flag(p)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "tcp-listen",
        help="accept one local TCP connection and tunnel it",
        description="Bind --listen, print the bound address to stderr, accept ONE TCP "
        "connection, attach to the relay, tunnel it, then exit.",
    )
    _peer_flags(p)
    p.add_argument("--listen", metavar="ADDR", default="127.0.0.1:0",
                   help="local address to bind (default 127.0.0.1:0)")  # fmt: skip
    p.set_defaults(func=_tcp_listen)

    p = sub.add_parser(
        "tcp-dial",
        help="attach and connect the tunnel to a TCP target",
        description="Attach to the relay, connect to --target, and pipe both ways "
        "until either side ends.",
    )
    _peer_flags(p)
    p.add_argument("--target", metavar="HOST:PORT", required=True, help="TCP address to connect to")
    p.set_defaults(func=_tcp_dial)

    p = sub.add_parser(
        "raw",
        help="pipe stdin/stdout through the tunnel",
        description="stdin → relay, relay → stdout (binary-safe); exits when either ends. "
        "End of stdin ends the tunnel (the wire has no half-close), so a side that only "
        "receives keeps its stdin open.",
    )
    _peer_flags(p)
    p.set_defaults(func=_raw)


def _need(value: str | None, flag: str, env: str) -> str:
    v = value or os.environ.get(env)
    if not v:
        raise ConfigError(f"missing {flag} (or set {env})")
    return v


def _target(args: argparse.Namespace) -> tuple[str, str, str, str]:
    url = _need(args.url, "--url", "SWSRS_URL")
    session = _need(args.session, "--session", "SWSRS_SESSION")
    token = _need(args.token, "--token", "SWSRS_TOKEN")
    role = args.role or "responder"
    tls.context(args)  # a bad --ca-file is a usage error, found before anything starts
    return url, session, token, role


async def _connect(args: argparse.Namespace) -> Connection:
    url, session, token, role = _target(args)
    return await connect(url, session, token, role=role, ssl=tls.context(args))  # type: ignore[arg-type]


def _tcp_listen(args: argparse.Namespace) -> int:
    _target(args)  # usage errors before binding anything

    def shown(addr: str) -> None:
        print(f"listening on {addr}", file=sys.stderr, flush=True)

    try:
        asyncio.run(tcp.listen(lambda: _connect(args), args.listen, on_listening=shown))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def _tcp_dial(args: argparse.Namespace) -> int:
    _target(args)

    async def run() -> None:
        conn = await _connect(args)
        await tcp.dial(conn, args.target)

    asyncio.run(run())
    return 0


def _raw(args: argparse.Namespace) -> int:
    _target(args)

    async def run() -> None:
        conn = await _connect(args)
        await stdio.pipe(conn, sys.stdin.buffer, sys.stdout.buffer)

    asyncio.run(run())
    return 0

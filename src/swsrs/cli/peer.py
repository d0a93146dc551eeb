"""Peer commands: ``tcp-listen``, ``tcp-dial``, ``raw``.

Each parses and checks its flags (usage errors exit 2 before anything
connects), drives an adapter, and turns how the tunnel ended into the exit
code: 0 only when everything was delivered and the end was clean, else 1
with the cause in one line (raised as :class:`~swsrs.errors.TunnelFailed`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from swsrs.adapters import stdio, tcp
from swsrs.cli import proxy, tls
from swsrs.cli.status import Reporter
from swsrs.client.attach import connect
from swsrs.client.connection import Connection, Role
from swsrs.durations import parse_duration
from swsrs.errors import ConfigError, TunnelFailed
from swsrs.peer import Ended
from swsrs.urls import relay_url


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
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only errors (no waiting/connected/summary lines)")  # fmt: skip
    p.add_argument("--reconnect", metavar="DURATION", default="2m",
                   help="after a drop, attach again and resume the stream for up to this long "
                   "(default 2m; 0: a drop ends the tunnel)")  # fmt: skip
    p.add_argument("--resume-buffer", metavar="SIZE", default="4MiB",
                   help="what is kept for resending until the other side has it; a full "
                   "buffer pauses sending (default 4MiB)")  # fmt: skip
    tls.add_flag(p)
    proxy.add_flag(p)


_ENDS = (
    "Exit status: 0 when every byte was delivered both ways and the tunnel ended cleanly; "
    "1 with one line naming the cause for any other end; 2 for a usage error."
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "tcp-listen",
        help="accept one local TCP connection and tunnel it",
        description="Bind --listen, print the bound address to stderr, accept ONE TCP "
        "connection, attach to the relay, tunnel it, then exit. " + _ENDS,
    )
    _peer_flags(p)
    p.add_argument("--listen", metavar="ADDR", default="127.0.0.1:0",
                   help="local address to bind (default 127.0.0.1:0)")  # fmt: skip
    p.set_defaults(func=_tcp_listen)

    p = sub.add_parser(
        "tcp-dial",
        help="attach and connect the tunnel to a TCP target",
        description="Attach to the relay; when the other side arrives, connect to --target "
        "and pipe both ways until both directions have ended. " + _ENDS,
    )
    _peer_flags(p)
    p.add_argument("--target", metavar="HOST:PORT", required=True, help="TCP address to connect to")
    p.set_defaults(func=_tcp_dial)

    p = sub.add_parser(
        "raw",
        help="pipe stdin/stdout through the tunnel",
        description="stdin → relay, relay → stdout (binary-safe). Nothing is read before the "
        "other side is there. The end of stdin travels as an end-of-stream (the other side's "
        "stdout or TCP connection sees EOF) while the other direction keeps flowing; a side "
        "whose stdin is empty (</dev/null, a background job) just receives. Against a peer "
        "or relay that does not speak swsrs.v1 the first end ends the tunnel. " + _ENDS,
    )
    _peer_flags(p)
    p.set_defaults(func=_raw)


@dataclass(frozen=True)
class _Peer:
    url: str
    session: str
    token: str
    role: Role
    args: argparse.Namespace
    reconnect: float
    resume_buffer: int


_SIZE = re.compile(r"(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3}  # fmt: skip


def parse_size(flag: str, text: str) -> int:
    """``4MiB``, ``512KiB``, ``1M`` (binary), ``2MB`` (decimal) or plain bytes."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"invalid {flag} {text!r} (want a size such as 4MiB or 512KiB)")
    return int(m.group(1)) * _UNITS[(m.group(2) or "").lower()]


def _need(value: str | None, flag: str, env: str) -> str:
    v = value or os.environ.get(env)
    if not v:
        raise ConfigError(f"missing {flag} (or set {env})")
    return v


def _checked(args: argparse.Namespace) -> _Peer:
    """Every usage error, before anything binds or connects."""
    url = _need(args.url, "--url", "SWSRS_URL")
    session = _need(args.session, "--session", "SWSRS_SESSION")
    token = _need(args.token, "--token", "SWSRS_TOKEN")
    relay_url(url, session)  # a malformed --url is a usage error
    tls.context(args)  # so is a bad --ca-file
    proxy.value(args)  # and a bad --proxy
    role: Role = "initiator" if args.role == "initiator" else "responder"
    try:
        reconnect = parse_duration(args.reconnect)
    except ConfigError as exc:
        raise ConfigError(f"--reconnect: {exc}") from None
    if reconnect < 0:
        raise ConfigError(f"--reconnect must not be negative, got {args.reconnect!r}")
    buffer = parse_size("--resume-buffer", args.resume_buffer)
    if buffer < 64 * 1024:
        raise ConfigError(f"--resume-buffer must be at least 64KiB, got {args.resume_buffer!r}")
    return _Peer(url, session, token, role, args, reconnect, buffer)


def _run(
    peer: _Peer, body: Callable[[Reporter, Callable[[], Awaitable[Connection]]], Awaitable[Ended]]
) -> int:
    """Run one tunnel: attach (lazily, when ``body`` asks), report, map the end to an exit."""
    report = Reporter(peer.session, quiet=peer.args.quiet, resume=peer.reconnect > 0)
    attached: list[Connection] = []
    progress: list[asyncio.Task[None]] = []

    async def attach() -> Connection:
        conn = await connect(
            peer.url,
            peer.session,
            peer.token,
            role=peer.role,
            ssl=tls.context(peer.args),
            auto_ack=False,
            on_event=report.on_event,
            reconnect=peer.reconnect,
            resume_buffer=peer.resume_buffer,
            proxy=proxy.value(peer.args),
        )
        attached.append(conn)
        progress.append(asyncio.ensure_future(report.progress(conn.protocol)))
        return conn

    async def main() -> Ended:
        def give_up() -> None:
            for c in attached:
                c.fail(HANGUP)

        work = asyncio.ensure_future(body(report, attach))
        hung_up = _on_hangup(give_up)
        try:
            either: set[asyncio.Future[Any]] = {work, hung_up}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # hung up before a tunnel could end: stop now
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                return Ended(False, HANGUP)
            return work.result()
        finally:
            hung_up.cancel()
            for t in progress:
                t.cancel()
            await asyncio.gather(*progress, return_exceptions=True)

    ended = asyncio.run(main())
    if not ended.ok:
        raise TunnelFailed(ended.cause)
    if attached:
        report.summary(attached[0].protocol)
    return 0


HANGUP = "hung up (SIGHUP)"
HANGUP_GRACE = 5.0  # seconds a hung-up peer command still has to end its tunnel cleanly


def _on_hangup(give_up: Callable[[], None]) -> asyncio.Future[None]:
    """SIGHUP: finish what can finish, then give up.

    ssh sends its ProxyCommand SIGHUP the moment it exits, right after closing
    the pipes: ``raw`` has read its end of input by then, and dying at once
    would cut the end-of-stream that the other side is waiting for. So a
    hang-up gives the tunnel ``HANGUP_GRACE`` seconds to end cleanly; then the
    tunnel fails (the other side is told) and the returned future completes.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not done.done():
            done.set_result(None)

    def expire() -> None:
        give_up()
        loop.call_later(1.0, stop)  # time for the other side to hear it

    def hangup() -> None:
        loop.remove_signal_handler(signal.SIGHUP)
        loop.call_later(HANGUP_GRACE, expire)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    done.add_done_callback(lambda _: loop.remove_signal_handler(signal.SIGHUP))
    return done


def _tcp_listen(args: argparse.Namespace) -> int:
    peer = _checked(args)
    tcp.split_hostport(args.listen, what="--listen address", allow_zero=True)

    async def body(report: Reporter, attach: Callable[[], Awaitable[Connection]]) -> Ended:
        def listening(addr: str) -> None:
            # Always shown, even with --quiet: with port 0 it is the only way to learn the port.
            print(f"listening on {addr}", file=sys.stderr, flush=True)

        return await tcp.listen(
            attach,
            args.listen,
            on_listening=listening,
            on_accepted=lambda who: report.say(f"connection from {who}; attaching to the relay"),
        )

    return _run(peer, body)


def _tcp_dial(args: argparse.Namespace) -> int:
    peer = _checked(args)
    tcp.split_hostport(args.target, what="--target")

    async def body(report: Reporter, attach: Callable[[], Awaitable[Connection]]) -> Ended:
        conn = await attach()
        return await tcp.dial(
            conn, args.target, on_connected=lambda t: report.say(f"connected to target {t}")
        )

    return _run(peer, body)


def _raw(args: argparse.Namespace) -> int:
    peer = _checked(args)

    async def body(report: Reporter, attach: Callable[[], Awaitable[Connection]]) -> Ended:
        conn = await attach()
        return await stdio.pipe(conn, sys.stdin.fileno(), sys.stdout.fileno())

    return _run(peer, body)

"""Operator commands: ``create`` and ``sessions list|get|delete``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp

from swsrs.cli import proxy, tls
from swsrs.client.admin import AdminClient, SessionStatus, TokenArg
from swsrs.client.auth import RefreshingTokenProvider, discover
from swsrs.client.tokens import FileTokenStore
from swsrs.errors import AuthDisabled, ConfigError, LoginRequired, SwsrsError


def _admin_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin-url", metavar="URL",
                   help="relay base URL (SWSRS_ADMIN_URL, else SWSRS_URL)")  # fmt: skip
    p.add_argument("--oidc-token", metavar="JWT", help="bearer token (SWSRS_OIDC_TOKEN)")
    p.add_argument(
        "--credentials",
        metavar="PATH",
        help="credentials file (default <user config dir>/swsrs/credentials.json)",
    )
    tls.add_flag(p)
    proxy.add_flag(p)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "create",
        help="mint a session",
        description="Mint a session. --output env prints SWSRS_SESSION, SWSRS_INITIATOR_TOKEN "
        "and SWSRS_RESPONDER_TOKEN for eval.",
    )
    _admin_flags(p)
    p.add_argument("--output", choices=["json", "env"], default="json", help="output format")
    p.set_defaults(func=_create)

    s = sub.add_parser("sessions", help="list, inspect or delete sessions (operators)",
                       description="List, inspect or delete sessions.")  # fmt: skip
    ssub = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    lp = ssub.add_parser("list", help="list live sessions", description="List live sessions.")
    _admin_flags(lp)
    lp.add_argument("--output", choices=["table", "json"], default="table", help="output format")
    lp.set_defaults(func=_list)
    gp = ssub.add_parser("get", help="show one session as JSON", description="Show one session.")
    _admin_flags(gp)
    gp.add_argument("id", help="session id")
    gp.set_defaults(func=_get)
    dp = ssub.add_parser(
        "delete",
        help="end a session and disconnect its peers",
        description="End a session; connected peers are disconnected.",
    )
    _admin_flags(dp)
    dp.add_argument("id", help="session id")
    dp.set_defaults(func=_delete)


def _admin_url(args: argparse.Namespace) -> str:
    url = args.admin_url or os.environ.get("SWSRS_ADMIN_URL") or os.environ.get("SWSRS_URL")
    if not url:
        raise ConfigError("missing --admin-url (or set SWSRS_ADMIN_URL)")
    return str(url)


async def _token(args: argparse.Namespace, url: str) -> TokenArg:
    """--oidc-token, else the saved credentials (refreshed when expired), else none if the
    relay says auth is off."""
    token = args.oidc_token or os.environ.get("SWSRS_OIDC_TOKEN")
    if token:
        return str(token)
    store = FileTokenStore(args.credentials)
    if store.load() is not None:
        provider = RefreshingTokenProvider(
            store, relay_url=url, ssl=tls.context(args), proxy=proxy.value(args)
        )
        try:
            await provider()  # refresh now, so a dead login fails before anything else
        except LoginRequired as exc:
            raise LoginRequired(f"{exc}: run `swsrs auth --relay {url}`") from None
        return provider
    try:
        await discover(url, ssl=tls.context(args), proxy=proxy.value(args))
    except AuthDisabled:
        return None
    raise LoginRequired(
        f"this relay requires a token: run `swsrs auth --relay {url}` or pass --oidc-token"
    )


async def _client(args: argparse.Namespace) -> AdminClient:
    url = _admin_url(args)
    ssl = tls.context(args)  # a bad --ca-file is a usage error before any request
    return AdminClient(url, await _token(args, url), ssl=ssl, proxy=proxy.value(args))


def _time(d: datetime, field: str) -> str:
    """RFC 3339 in UTC with ``Z``, fractional seconds kept (to the microsecond)."""
    if d.utcoffset() is None:
        raise ValueError(f"{field} {d.isoformat()} has no UTC offset")
    text = d.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return text.rstrip("0").rstrip(".") + "Z"


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{field} is {value!r}, not a string")
    return value


def _status_json(s: SessionStatus) -> dict[str, Any]:
    return {
        "id": _text(s.id, "id"),
        "state": _text(s.state, "state"),
        "created_at": _time(s.created_at, "created_at"),
        "expires_at": _time(s.expires_at, "expires_at"),
        "last_activity": _time(s.last_activity, "last_activity"),
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "initiator_connected": s.initiator_connected,
        "responder_connected": s.responder_connected,
    }


@contextlib.contextmanager
def _reply(request: str) -> Iterator[None]:
    """A reply that is not the JSON the admin API promises becomes one clear error."""
    why: str
    cause: Exception
    try:
        yield
    except aiohttp.ContentTypeError as exc:
        why, cause = f"not JSON ({exc.message})", exc
    except json.JSONDecodeError as exc:
        why, cause = f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", exc
    except KeyError as exc:
        why, cause = f"missing field {exc.args[0]!r}", exc
    except (TypeError, AttributeError) as exc:
        why, cause = f"wrong shape ({exc})", exc
    except ValueError as exc:
        why, cause = f"bad value ({exc})", exc
    else:
        return
    raise SwsrsError(f"malformed reply from the relay to {request}: {why}") from cause


def _create(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await _client(args) as admin:
            with _reply("POST /admin/sessions"):
                s = await admin.create()
                doc: dict[str, Any] = {
                    "id": _text(s.id, "id"),
                    "initiator_token": _text(s.initiator_token, "initiator_token"),
                    "responder_token": _text(s.responder_token, "responder_token"),
                }
                if s.initiator_url:
                    doc["initiator_url"] = s.initiator_url
                    doc["responder_url"] = s.responder_url
                doc["created_at"] = _time(s.created_at, "created_at")
                doc["expires_at"] = _time(s.expires_at, "expires_at")
        if args.output == "env":
            print(f"SWSRS_SESSION={s.id}")
            print(f"SWSRS_INITIATOR_TOKEN={s.initiator_token}")
            print(f"SWSRS_RESPONDER_TOKEN={s.responder_token}")
        else:
            print(json.dumps(doc, indent=2))
        return 0

    return asyncio.run(run())


def _list(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await _client(args) as admin:
            with _reply("GET /admin/sessions"):
                sessions = [_status_json(s) for s in await admin.list()]
        if args.output == "json":
            print(json.dumps({"sessions": sessions}, indent=2))
            return 0
        row = "{:<24} {:<10} {:<5} {:<5} {:>12} {:>12}  {}"
        print(row.format("ID", "STATE", "INIT", "RESP", "BYTES_IN", "BYTES_OUT", "EXPIRES"))
        for s in sessions:
            init = "yes" if s["initiator_connected"] else "no"
            resp = "yes" if s["responder_connected"] else "no"
            print(row.format(s["id"], s["state"], init, resp, s["bytes_in"], s["bytes_out"],
                             s["expires_at"]))  # fmt: skip
        return 0

    return asyncio.run(run())


def _get(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await _client(args) as admin:
            with _reply(f"GET /admin/sessions/{args.id}"):
                status = _status_json(await admin.get(args.id))
        print(json.dumps(status, indent=2))
        return 0

    return asyncio.run(run())


def _delete(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await _client(args) as admin:
            await admin.delete(args.id)
        print(f"deleted {args.id}", file=sys.stderr)
        return 0

    return asyncio.run(run())

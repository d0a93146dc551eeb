"""``swsrs auth``: device login to the relay's IdP, saving the token for later commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any

from swsrs.cli import proxy, tls
from swsrs.client.auth import DeviceAuthorization, device_login
from swsrs.client.tokens import FileTokenStore
from swsrs.errors import AuthDisabled, ConfigError, SwsrsError

DESCRIPTION = """\
Log in to the identity provider the relay names in its discovery document,
with the OAuth 2.0 device authorization grant: open the URL shown, enter the
code, approve. The token (with a refresh token) is saved to
<user config dir>/swsrs/credentials.json, mode 0600; `swsrs create` and
`swsrs sessions` use it and refresh it when it expires."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "auth",
        help="log in to the relay's identity provider (device flow)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--relay", metavar="URL", help="relay URL (SWSRS_URL)")
    p.add_argument("--client-id", metavar="ID", help="OAuth client id (default: the relay's hint)")
    p.add_argument(
        "--credentials",
        metavar="PATH",
        help="credentials file (default <user config dir>/swsrs/credentials.json)",
    )
    p.add_argument("--logout", action="store_true", help="forget the saved credentials")
    tls.add_flag(p)
    proxy.add_flag(p)
    p.set_defaults(func=run)


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _show(auth: DeviceAuthorization) -> None:
    err = sys.stderr
    print(f"To log in, open {auth.verification_uri}", file=err)
    print(f"and enter the code: {auth.user_code}", file=err)
    if auth.verification_uri_complete:
        print(f"(or open {auth.verification_uri_complete})", file=err)
    print("Waiting for approval…", file=err, flush=True)


async def _spin(stop: asyncio.Event) -> None:
    """A small sign of life on a terminal while the IdP is polled."""
    frames = "|/-\\"
    i = 0
    while not stop.is_set():
        sys.stderr.write(f"\r{frames[i % 4]} ")
        sys.stderr.flush()
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
    sys.stderr.write("\r  \r")


def run(args: argparse.Namespace) -> int:
    store = FileTokenStore(args.credentials)
    if args.logout:
        if store.delete():
            print(f"logged out: removed {store.path}", file=sys.stderr)
        else:
            print(f"not logged in: no credentials at {store.path}", file=sys.stderr)
        return 0
    relay = args.relay or os.environ.get("SWSRS_URL")
    if not relay:
        raise ConfigError("missing --relay (or set SWSRS_URL)")

    async def login() -> int:
        stop = asyncio.Event()
        spinner: asyncio.Task[None] | None = None

        def prompt(auth: DeviceAuthorization) -> None:
            nonlocal spinner
            _show(auth)
            if _interactive():
                spinner = asyncio.get_running_loop().create_task(_spin(stop))

        try:
            token = await device_login(
                relay,
                prompt=prompt,
                client_id=args.client_id,
                ssl=tls.context(args),
                proxy=proxy.value(args),
            )
        except AuthDisabled:
            raise SwsrsError(
                f"the relay at {relay} runs without admin auth (--no-auth): no login needed"
            ) from None
        finally:
            stop.set()
            if spinner is not None:
                await spinner
        store.save(token)
        print(f"Logged in. Credentials saved to {store.path}", file=sys.stderr)
        return 0

    return asyncio.run(login())

"""``--proxy URL`` for every client command (else ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``)."""

from __future__ import annotations

import argparse

from swsrs.client.proxy import parse_proxy


def add_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--proxy",
        metavar="URL",
        help="HTTP proxy for every connection, http://[user:password@]host:port (default: "
        "HTTPS_PROXY/HTTP_PROXY/ALL_PROXY, minus NO_PROXY; '' for none)",
    )


def value(args: argparse.Namespace) -> str | None:
    """``--proxy`` checked (a malformed one is a usage error), or ``None`` for the environment's."""
    spec: str | None = getattr(args, "proxy", None)
    if spec:
        parse_proxy(spec)
    return spec

"""``--ca-file`` for every client command: which CAs to trust for ``https://``/``wss://``.

Without the flag the system trust store is used, which OpenSSL lets
``SSL_CERT_FILE``/``SSL_CERT_DIR`` replace.
"""

from __future__ import annotations

import argparse
import ssl

from swsrs.errors import ConfigError


def add_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca-file",
        metavar="PATH",
        help="PEM file of extra CA(s) to trust for https/wss, besides the system store "
        "(which honours SSL_CERT_FILE)",
    )


def context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The SSL context for ``--ca-file`` (the system store plus the file), or ``None``.

    The system store stays: one context serves the relay and, for ``auth`` and
    token refresh, the identity provider, which usually has a public certificate.
    """
    path = getattr(args, "ca_file", None)
    if not path:
        return None
    try:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=path)
        return ctx
    except OSError as exc:  # ssl.SSLError is an OSError too
        why = exc.strerror or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(f"cannot load --ca-file {path!r}: {why}") from None

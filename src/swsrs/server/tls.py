"""In-process TLS: ``--tls-cert``/``--tls-key`` → an :class:`ssl.SSLContext` for the one port.

``https://`` and ``wss://`` are served by the same listener. Every problem
with the files is a :class:`~swsrs.errors.ConfigError` with one line, so
``swsrs serve`` exits 2 before it binds anything.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from swsrs.errors import ConfigError


def _read(flag: str, path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path!r}: {exc.strerror or exc}") from None


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """Load a PEM certificate chain and its private key, or explain in one line why not."""
    if "-----BEGIN CERTIFICATE-----" not in _read("--tls-cert", cert):
        raise ConfigError(f"--tls-cert {cert!r} holds no PEM certificate")
    if "PRIVATE KEY-----" not in _read("--tls-key", key):
        raise ConfigError(f"--tls-key {key!r} holds no PEM private key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"--tls-key {key!r} does not match --tls-cert {cert!r}") from None
        raise ConfigError(
            f"cannot load --tls-cert {cert!r} / --tls-key {key!r}: {exc.reason or exc}"
        ) from None
    return ctx
